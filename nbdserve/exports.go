package nbdserve

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// The export table. Exports come and go while the server runs: a
// service adds a disk when asked and removes it when its owner is done,
// without stopping the clients of the others. So the table is guarded
// by a mutex, read by every handshake (LIST, INFO, GO) and changed only
// through AddExport and RemoveExport.
//
// Removing an export must leave its disk free for the caller to close,
// without losing a write a client was told succeeded. So RemoveExport:
//
//  1. takes the name out of the table: LIST stops showing it, INFO and
//     GO answer NBD_REP_ERR_UNKNOWN, EXPORT_NAME disconnects; a client
//     that already chose it keeps its connection for now;
//  2. makes every connection that chose it stop reading requests (the
//     same stop as shutdown and eviction): requests already read are
//     run and answered, the disk is flushed if writable (so every write
//     acknowledged is durable before the client sees the disconnect),
//     and the connection closes;
//  3. waits for those connections to end, up to ShutdownGrace; then it
//     closes the ones still busy (a client that takes no replies would
//     otherwise hold the removal until StallTimeout) and waits for their
//     requests to leave the disk. Their replies are dropped; the flush
//     still happens.
//
// Draining rather than cutting the connections at once is what a client
// of a removed export can live with: it sees an ordinary disconnect
// after its last reply, exactly as when the server shuts down, and
// reconnects or gives up. Keeping them open on a disk the caller is about
// to close is not an option.
//
// A connection is counted as a user of the export from the moment GO or
// EXPORT_NAME looked it up (under the table's lock, so a removal either
// comes first and the client is told the export is unknown, or comes
// after and finds the connection) until its goroutine ends.

// exportTable is the server's exports and the connections using each.
type exportTable struct {
	mu sync.Mutex
	// byName are the exports clients can open; users the connections
	// that chose an export, by connection. Guarded by mu.
	byName map[string]*Export
	users  map[*conn]*exportUse
}

// exportUse is one connection's use of an export; gone is closed when
// the connection has ended (its requests answered or dropped, its flush
// done).
type exportUse struct {
	export *Export
	gone   chan struct{}
}

// exports is the table, made on first use from the Exports field.
func (s *Server) exports() (*exportTable, error) {
	s.tableOnce.Do(func() {
		t := &exportTable{byName: map[string]*Export{}, users: map[*conn]*exportUse{}}
		for name, e := range s.Exports {
			if e != nil && e.Name != name {
				s.tableErr = fmt.Errorf("nbdserve: export %q is set up under the name %q: make the map key and Name the same", e.Name, name)
				return
			}
			if err := t.add(e); err != nil {
				s.tableErr = err
				return
			}
		}
		s.table = t
	})
	return s.table, s.tableErr
}

// AddExport offers e to clients from now on, including on listeners
// already being served. Its name must be new and not empty (the empty
// name selects Default).
func (s *Server) AddExport(e *Export) error {
	t, err := s.exports()
	if err != nil {
		return err
	}
	if err := t.add(e); err != nil {
		return err
	}
	s.log().Debug("nbd: export added", "export", e.Name)
	return nil
}

func (t *exportTable) add(e *Export) error {
	switch {
	case e == nil || e.Disk == nil:
		return errors.New("nbdserve: an export needs a disk")
	case e.Name == "":
		return errors.New("nbdserve: an export needs a name (the empty name selects Server.Default)")
	case len(e.Name) > maxStringLen:
		return fmt.Errorf("nbdserve: export name of %d bytes: NBD allows at most %d", len(e.Name), maxStringLen)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.byName[e.Name]; dup {
		return fmt.Errorf("nbdserve: an export named %q exists already: remove it first or choose another name", e.Name)
	}
	t.byName[e.Name] = e
	return nil
}

// RemoveExport stops offering the export named name and ends the
// connections using it (see the top of exports.go): each answers the
// requests it has read, flushes the disk and closes. It returns once no
// request of this server touches the export's disk, so the caller may
// close it. The wait for clients lasts at most ShutdownGrace, less if
// ctx ends first; connections still busy then are closed.
func (s *Server) RemoveExport(ctx context.Context, name string) (*Export, error) {
	t, err := s.exports()
	if err != nil {
		return nil, err
	}
	e, uses, ok := t.remove(name)
	if !ok {
		return nil, fmt.Errorf("nbdserve: no export named %q", name)
	}
	for c := range uses {
		c.stopReading()
	}
	if !s.drain(ctx, uses) {
		for c, u := range uses {
			select {
			case <-u.gone:
			default:
				c.forceClose()
			}
		}
		s.log().Warn("nbd: clients of a removed export did not finish in time; closing their connections", "export", name, "grace", s.shutdownGrace())
		for _, u := range uses {
			<-u.gone
		}
	}
	s.log().Debug("nbd: export removed", "export", name, "connections", len(uses))
	return e, nil
}

// drain waits for the connections of uses to end, at most the shutdown
// grace period or until ctx ends; it reports whether they all did.
func (s *Server) drain(ctx context.Context, uses map[*conn]*exportUse) bool {
	grace := time.NewTimer(s.shutdownGrace())
	defer grace.Stop()
	for _, u := range uses {
		select {
		case <-u.gone:
		case <-grace.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// remove takes name out of the table and returns the export with the
// connections using it.
func (t *exportTable) remove(name string) (*Export, map[*conn]*exportUse, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.byName[name]
	if !ok {
		return nil, nil, false
	}
	delete(t.byName, name)
	uses := map[*conn]*exportUse{}
	for c, u := range t.users {
		if u.export == e {
			uses[c] = u
		}
	}
	return e, uses, true
}

// LookupExport returns the export named name, if it is offered now.
func (s *Server) LookupExport(name string) (*Export, bool) {
	t, err := s.exports()
	if err != nil {
		return nil, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.byName[name]
	return e, ok
}

// ExportNames lists the exports offered now, sorted (what NBD_OPT_LIST
// answers).
func (s *Server) ExportNames() []string { return s.names() }

// names lists the exports offered now, sorted.
func (s *Server) names() []string {
	t, err := s.exports()
	if err != nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	names := make([]string, 0, len(t.byName))
	for n := range t.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// lookup finds an export by the name a client sent ("" is Default).
func (s *Server) lookup(name string) (*Export, bool) {
	return s.find(nil, name)
}

// attach finds an export for GO or EXPORT_NAME and counts c as its user
// until c ends (detach), in one step under the lock: see the top.
func (s *Server) attach(c *conn, name string) (*Export, bool) {
	return s.find(c, name)
}

func (s *Server) find(c *conn, name string) (*Export, bool) {
	if name == "" {
		if name = s.Default; name == "" {
			return nil, false
		}
	}
	t, err := s.exports()
	if err != nil {
		return nil, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.byName[name]
	if ok && c != nil {
		if old := t.users[c]; old != nil {
			close(old.gone) // a second GO cannot happen; stay safe if it did
		}
		t.users[c] = &exportUse{export: e, gone: make(chan struct{})}
	}
	return e, ok
}

// detach ends c's use of its export, once c's goroutine is done with
// the disk.
func (s *Server) detach(c *conn) {
	t, err := s.exports()
	if err != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if u := t.users[c]; u != nil {
		delete(t.users, c)
		close(u.gone)
	}
}
