package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"vhdkit/hypervisor/guestagent"
	"vhdkit/service"
)

// The guest's side of a consistent backup (service.Quiescer): before a
// backup cuts a point of one of the guest's disks, the guest's agent
// (qemu-guest-agent, on the port every guest gets: AgentPort) freezes
// its filesystems, so the point holds them as after a clean unmount,
// and thaws them once the point is cut. A guest with no agent answering
// gets no freeze: the point is crash-consistent, and Freeze says so.

var _ service.Quiescer = (*VM)(nil)

// quiesceTimes bound the agent's part (vm.quiesce).
type quiesceTimes struct {
	// ping: how long the agent has to answer before the guest is taken
	// to have none. Short: that is the common case, and a backup waits.
	ping time.Duration
	// freeze and thaw bound those commands: freezing syncs every
	// filesystem of the guest first.
	freeze, thaw time.Duration
	// limit: a freeze not thawed by then is thawed all the same (a
	// caller that never calls thaw must not leave the guest's writes
	// blocked for ever).
	limit time.Duration
}

var defaultQuiesce = quiesceTimes{ping: 2 * time.Second, freeze: time.Minute, thaw: 10 * time.Second, limit: 2 * time.Minute}

// freezer shares one freeze among the Freeze calls that overlap (a
// backup of each disk at once): the guest's agent freezes every
// filesystem in one command, so the first caller freezes and the last
// to thaw thaws.
type freezer struct {
	mu sync.Mutex // held across the agent's commands: freezes and thaws take turns
	// cur is the freeze in force, or nil. Guarded by mu.
	cur *freezeHold
}

// freezeHold is one freeze of the guest's filesystems.
type freezeHold struct {
	agent   *guestagent.Client
	holders int         // Freeze calls not thawed yet; guarded by freezer.mu
	over    bool        // thawed (or given up); guarded by freezer.mu
	timer   *time.Timer // the limit
}

// Freeze is service.Quiescer: for a disk of the guest (export disk0,
// disk1...), it freezes the guest's filesystems through its agent when
// one answers within a short deadline, and returns the thaw to call
// once the point is cut. quiesced is false, with a no-op thaw, when no
// agent answers or the export is not the guest's: the point is then
// crash-consistent. If the freeze fails, the filesystems are thawed
// before Freeze returns the error. A thaw that fails is logged as an
// error and returned: the guest's writes stay blocked until its agent
// thaws.
func (vm *VM) Freeze(ctx context.Context, export string) (thaw func() error, quiesced bool, err error) {
	noop := func() error { return nil }
	inst := vm.running()
	if !vm.isGuestDisk(export) || inst == nil || inst.agent == nil {
		return noop, false, nil
	}
	f := &vm.freezer
	f.mu.Lock()
	defer f.mu.Unlock()
	if h := f.cur; h != nil && h.agent == inst.agent {
		h.holders++
		return vm.thawFunc(h), true, nil
	}
	pctx, cancel := context.WithTimeout(ctx, vm.quiesce.ping)
	perr := inst.agent.Ping(pctx)
	cancel()
	if ctx.Err() != nil {
		return nil, false, ctx.Err()
	}
	if perr != nil {
		vm.log.Info("no guest agent answers: the point is crash-consistent", "export", export, "err", perr)
		return noop, false, nil
	}
	fctx, cancel := context.WithTimeout(ctx, vm.quiesce.freeze)
	n, ferr := inst.agent.FreezeFS(fctx)
	cancel()
	if ferr != nil {
		// The freeze may have happened in part, or may still: the thaw
		// is queued behind it, so it lands after it.
		return nil, false, errors.Join(fmt.Errorf("freeze the guest's filesystems: %w", ferr), vm.thawAgent(inst.agent))
	}
	h := &freezeHold{agent: inst.agent, holders: 1}
	h.timer = time.AfterFunc(vm.quiesce.limit, func() { vm.expireFreeze(h) })
	f.cur = h
	vm.log.Info("the guest's filesystems are frozen", "filesystems", n, "for", export)
	return vm.thawFunc(h), true, nil
}

// isGuestDisk reports whether export is one of the guest's disks.
func (vm *VM) isGuestDisk(export string) bool {
	for i := range vm.disks {
		if exportName(i) == export {
			return true
		}
	}
	return false
}

// thawFunc is one holder's thaw of h: the last one thaws the guest.
// Calling it again does nothing.
func (vm *VM) thawFunc(h *freezeHold) func() error {
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() {
			vm.freezer.mu.Lock()
			defer vm.freezer.mu.Unlock()
			if h.over {
				return
			}
			if h.holders--; h.holders == 0 {
				err = vm.endHold(h)
			}
		})
		return err
	}
}

// expireFreeze thaws h if it is still in force at its limit.
func (vm *VM) expireFreeze(h *freezeHold) {
	vm.freezer.mu.Lock()
	defer vm.freezer.mu.Unlock()
	if h.over {
		return
	}
	vm.log.Error("the guest's filesystems were frozen for longer than the limit and nobody thawed them: thawing them now (a backup that froze them did not finish)", "limit", vm.quiesce.limit)
	vm.endHold(h)
}

// endHold ends h and thaws the guest. Called with freezer.mu held.
func (vm *VM) endHold(h *freezeHold) error {
	h.over = true
	h.timer.Stop()
	if vm.freezer.cur == h {
		vm.freezer.cur = nil
	}
	return vm.thawAgent(h.agent)
}

// thawAgent thaws the guest's filesystems, trying twice (the second
// time after a resynchronisation). A guest that is gone (QEMU ended) has
// nothing frozen; a thaw that fails otherwise is logged as an error.
func (vm *VM) thawAgent(a *guestagent.Client) error {
	var err error
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), vm.quiesce.thaw)
		var n int
		n, err = a.ThawFS(ctx)
		cancel()
		if err == nil {
			vm.log.Info("the guest's filesystems are thawed", "filesystems", n)
			return nil
		}
		var refused *guestagent.Error
		if errors.Is(err, guestagent.ErrClosed) || errors.As(err, &refused) {
			break
		}
	}
	if errors.Is(err, guestagent.ErrClosed) {
		return nil // QEMU is gone, and the guest with it
	}
	err = fmt.Errorf("thaw the guest's filesystems: %w: its writes stay blocked until its agent reads the thaw queued for it, or 'fsfreeze -u MOUNTPOINT' is run in the guest", err)
	vm.log.Error("THE GUEST'S FILESYSTEMS MAY STILL BE FROZEN", "err", err)
	return err
}
