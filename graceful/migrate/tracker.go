package migrate

import (
	"log/slog"
	"net"
	"sync"
)

// Tracker holds one process's part in live migration: the connections it
// would hand over at a takeover, and those it received from its
// predecessor. graceful's Process holds one; an application meets it only
// through the Process.
type Tracker struct {
	mu      sync.Mutex
	tracked map[*Conn]struct{}
	in      []*Conn            // migrated in, not taken yet
	sinks   []func(*Conn) bool // take migrated connections before in does
	left    budget             // what ReceiveLate may take, once Receive ran
}

// Track registers c for migration and returns it wrapped in a Conn, which
// the application reads and writes instead of c. The Conn takes ownership
// of c: closing the Conn closes c. With a gate g the Conn is gated (see
// Gate).
func (t *Tracker) Track(c net.Conn, g Gate) *Conn {
	mc := &Conn{Conn: c, t: t, network: c.LocalAddr().Network(), gate: g}
	t.mu.Lock()
	if t.tracked == nil {
		t.tracked = make(map[*Conn]struct{})
	}
	t.tracked[mc] = struct{}{}
	t.mu.Unlock()
	return mc
}

func (t *Tracker) untrack(c *Conn) {
	t.mu.Lock()
	delete(t.tracked, c)
	t.mu.Unlock()
}

// snapshot returns the tracked connections.
func (t *Tracker) snapshot() []*Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	snap := make([]*Conn, 0, len(t.tracked))
	for c := range t.tracked {
		snap = append(snap, c)
	}
	return snap
}

// AddSink has take offered every connection that migrates in from now on,
// before Migrated returns it: take reports whether it took the connection
// (graceful's HTTPServer takes its own).
func (t *Tracker) AddSink(take func(*Conn) bool) {
	t.mu.Lock()
	t.sinks = append(t.sinks, take)
	t.mu.Unlock()
}

// Migrated returns the connections that migrated in and no sink took, each
// once.
func (t *Tracker) Migrated() []*Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	in := t.in
	t.in = nil
	return in
}

// Adopt makes the connections received by Receive this process's, once
// the predecessor's DONE has come: they are tracked, offered to the sinks,
// and the rest kept for Migrated.
func (t *Tracker) Adopt(conns []*Conn) {
	t.mu.Lock()
	if len(conns) > len(t.tracked) {
		// Sized once: growing a map of thousands, doubling after
		// doubling, costs more than filling it.
		tracked := make(map[*Conn]struct{}, len(t.tracked)+len(conns))
		for c := range t.tracked {
			tracked[c] = struct{}{}
		}
		t.tracked = tracked
	}
	sinks := t.sinks
	for _, c := range conns {
		t.tracked[c] = struct{}{}
	}
	t.mu.Unlock()
	rest := make([]*Conn, 0, len(conns))
next:
	for _, c := range conns {
		for _, take := range sinks {
			if take(c) {
				continue next
			}
		}
		rest = append(rest, c)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.in == nil {
		t.in = rest
	} else {
		t.in = append(t.in, rest...)
	}
}

// logger returns l, or a logger that discards.
func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
