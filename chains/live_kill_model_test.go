package chains

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// killEvents is what the parent learned from a killed child's lines
// (live_kill_child_test.go).
type killEvents struct {
	acked   [killWriters]uint64 // the last operation known to have returned
	flushed [killWriters]uint64 // the last operation known flushed
	undo    []undoEvent         // undo commits and discards, in order
	lastOp  string              // the B line of a live change that did not return
	phase   string              // the last line of the live changes: where the kill landed
	lines   []string            // the live changes' lines, for messages
	ready   bool
	failure string // an X line: the child met an error
}

// undoEvent is an undo commit or discard. For a commit, each writer's
// operations up to begin[w] landed before its swap and those after
// end[w]+1 after it; for a discard (writers paused), the operations up to
// begin[w] came before it.
type undoEvent struct {
	discard    bool
	begin, end [killWriters]uint64
	done       bool
}

func (ev *killEvents) add(line string) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return
	}
	switch f[0] {
	case "R":
		ev.ready = true
	case "X":
		ev.failure = line
	case "W", "F":
		w, seq := atoi(f[1]), uint64(atoi(f[2]))
		ev.acked[w] = max(ev.acked[w], seq)
		if f[0] == "F" {
			ev.flushed[w] = max(ev.flushed[w], seq)
		}
	default:
		ev.control(f, line)
	}
}

// control records a line of the live changes.
func (ev *killEvents) control(f []string, line string) {
	ev.lines = append(ev.lines, line)
	ev.phase = line
	switch f[0] {
	case "B":
		ev.lastOp = line
	case "E":
		ev.lastOp = ""
	case "C", "D":
		var acked [killWriters]uint64
		for w := range killWriters {
			acked[w] = uint64(atoi(f[3+w]))
			ev.acked[w] = max(ev.acked[w], acked[w])
		}
		if f[2] == "begin" {
			ev.undo = append(ev.undo, undoEvent{discard: f[0] == "D", begin: acked})
		} else {
			last := &ev.undo[len(ev.undo)-1]
			last.end, last.done = acked, true
		}
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// chunkWrite is one version of a 4 KiB chunk: the operation seq of its
// writer wrote it (seq 0: the base image's content).
type chunkWrite struct {
	seq  uint64
	zero bool
}

// killModel says, for every chunk, which versions may be read back after
// the kill: the last one made durable (by a Flush, or by an undo commit's
// or discard's swap) or any written after it.
type killModel struct {
	ev   *killEvents
	hist [][]chunkWrite // per chunk, the writes covering it in order
	// inflight is each writer's operation that may have been under way.
	inflight [killWriters]uint64
}

func newKillModel(ev *killEvents, size int64, seed uint64) *killModel {
	m := &killModel{ev: ev, hist: make([][]chunkWrite, size/killChunk)}
	for x := range m.hist {
		m.hist[x] = []chunkWrite{{seq: 0, zero: !baseHolds(int64(x) * killChunk)}}
	}
	for w := range killWriters {
		m.inflight[w] = ev.acked[w] + 1
		plan := newKillPlan(size, w, seed)
		for plan.seq < m.inflight[w] {
			op := plan.next()
			for off := op.off; off < op.off+op.n; off += killChunk {
				m.hist[off/killChunk] = append(m.hist[off/killChunk], chunkWrite{plan.seq, op.zero})
			}
		}
	}
	return m
}

// step is something that happens to a chunk, at a position in its
// writer's sequence: after operation pos, a write (order 0), the flush
// after it (1), then undo commits and discards (2+their index).
type step struct {
	pos, order uint64
	kind       byte // 'w'rite, 'f'lush, 'c'ommit, 'd'iscard
	v          chunkWrite
}

// allowed lists the versions chunk x may hold, over every place an undo
// commit's swap may have fallen; applyLast says whether a discard that
// did not return took effect.
func (m *killModel) allowed(x int, applyLast bool) []chunkWrite {
	w := killOwner(int64(x) * killChunk)
	fixed := m.writeSteps(x, w)
	var out []chunkWrite
	var try func(i int, steps []step)
	try = func(i int, steps []step) {
		if i == len(m.ev.undo) {
			for _, v := range simulateChunk(steps) {
				if !slices.Contains(out, v) {
					out = append(out, v)
				}
			}
			return
		}
		for _, pos := range m.swapPlaces(i, x, w, applyLast) {
			next := steps
			if pos >= 0 {
				kind := byte('c')
				if m.ev.undo[i].discard {
					kind = 'd'
				}
				next = append(slices.Clone(steps), step{pos: uint64(pos), order: 2 + uint64(i), kind: kind})
			}
			try(i+1, next)
		}
	}
	try(0, fixed)
	return out
}

// writeSteps are the writes of chunk x and the flushes after them.
func (m *killModel) writeSteps(x, w int) []step {
	var steps []step
	for _, v := range m.hist[x][1:] {
		steps = append(steps, step{pos: v.seq, kind: 'w', v: v})
		f := (v.seq + killFlushEvery - 1) / killFlushEvery * killFlushEvery
		if f <= m.ev.flushed[w] {
			steps = append(steps, step{pos: f, order: 1, kind: 'f'})
		}
	}
	return steps
}

// swapPlaces lists where undo event i may have taken effect for chunk x
// (after which operation of its writer; -1: not at all). A discard is
// exact; a commit's swap fell after begin[w] and at most one operation
// after end[w], and only the places where chunk x changes differ.
func (m *killModel) swapPlaces(i, x, w int, applyLast bool) []int64 {
	e := m.ev.undo[i]
	if e.discard {
		if e.done || applyLast {
			return []int64{int64(e.begin[w])}
		}
		return []int64{-1}
	}
	last := m.inflight[w]
	if e.done {
		last = min(last, e.end[w]+1)
	}
	places := []int64{int64(e.begin[w])}
	for _, v := range m.hist[x][1:] {
		if v.seq > e.begin[w] && v.seq <= last {
			places = append(places, int64(v.seq))
		}
	}
	if !e.done {
		places = append(places, -1)
	}
	return places
}

// simulateChunk plays the steps and returns the versions the chunk may
// hold: the durable one and every one written after it.
func simulateChunk(steps []step) []chunkWrite {
	slices.SortStableFunc(steps, func(a, b step) int {
		if a.pos != b.pos {
			return cmpU(a.pos, b.pos)
		}
		return cmpU(a.order, b.order)
	})
	var base, view, durable chunkWrite // seq 0: the base image's content
	var since []chunkWrite
	for _, s := range steps {
		switch s.kind {
		case 'w':
			view = s.v
			since = append(since, s.v)
		case 'f':
			durable, since = view, nil
		case 'c':
			base, durable, since = view, view, nil
		case 'd':
			view, durable, since = base, base, nil
		}
	}
	return append([]chunkWrite{durable}, since...)
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// checkChunk checks the sectors of chunk x, read back in p, against the
// versions allowed; it returns what is wrong, or "".
func (m *killModel) checkChunk(x int, p []byte, allowed []chunkWrite) string {
	w := killOwner(int64(x) * killChunk)
	holds := baseHolds(int64(x) * killChunk)
	for s := 0; s < killChunk/sectorSize; s++ {
		sector := int64(x)*killChunk/sectorSize + int64(s)
		got := readSector(p[s*sectorSize:(s+1)*sectorSize], sector)
		if sectorAllowed(got, w, holds, allowed) {
			continue
		}
		return fmt.Sprintf("sector %d (writer %d, acked %d, flushed %d) holds %s; allowed %v; written %v",
			sector, w, m.ev.acked[w], m.ev.flushed[w], describeSector(got), allowed, m.hist[x])
	}
	return ""
}

func sectorAllowed(got sectorVersion, w int, baseHasData bool, allowed []chunkWrite) bool {
	for _, v := range allowed {
		zero := v.zero || v.seq == 0 && !baseHasData
		if got.zero && zero || got.ok && !zero && got.w == w && got.seq == v.seq {
			return true
		}
	}
	return false
}

func describeSector(v sectorVersion) string {
	switch {
	case v.zero:
		return "zeros"
	case v.ok:
		return fmt.Sprintf("writer %d's version %d", v.w, v.seq)
	}
	return "garbage"
}
