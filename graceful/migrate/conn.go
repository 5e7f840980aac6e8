package migrate

import (
	"bufio"
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"github.com/fdpass/fdpass/internal/handoffmsg"
)

// ErrMigrating: a Conn's Read was interrupted because the connection is
// being migrated to the successor; call Conn.Handoff.
var ErrMigrating = errors.New("graceful: connection is being migrated")

// Conn is an established connection that can migrate to the successor at
// a takeover (live migration). Get one from graceful's Process.Track, or,
// in the successor, from Process.MigratedConns. It is a net.Conn whose Read
// first returns the bytes handed over with it, and whose Read, while the
// connection is being migrated, returns ErrMigrating.
//
// # Quiescing a connection
//
// A connection moves only at a message boundary, which only the
// application knows. The goroutine that reads the connection does this:
//
//	r := bufio.NewReader(c) // reads from the *Conn
//	for {
//		line, err := r.ReadString('\n')
//		if errors.Is(err, graceful.ErrMigrating) {
//			if c.HandoffReader(state(), r, []byte(line)) {
//				return // the successor serves it now
//			}
//			continue // not migrated: r yields line's bytes again
//		}
//		...         // handle one whole message, answer it
//	}
//
// At a takeover the Process interrupts Read (with a read deadline in the
// past), so a reader that waits for the next request, or comes back for
// it, gets ErrMigrating with whatever part of a message it has read.
// Handoff then passes the session state and the bytes read but not
// processed; it blocks until the successor holds the connection (true:
// return, and neither read nor write it again) or the migration failed
// (false: carry on serving, the next Read returns those bytes first).
// Answers already written stay in the socket and reach the client.
//
// A connection whose reader does not reach Handoff within
// Options.QuiesceTimeout (one busy writing to a slow client, say) stays
// with this process, which serves and drains it as before.
type Conn struct {
	net.Conn
	t       *Tracker
	network string // "tcp", "unix", ...

	mu      sync.Mutex
	phase   connPhase
	pending []byte    // what Read returns before reading the socket
	state   []byte    // the session state received with it
	rdl     time.Time // the application's read deadline
	out     offer     // what is offered to the successor
	closing bool      // Close came while offered
	quiet   *quiet    // the quiesce that waits for this connection
	decided sync.Cond // on mu: the migration of the offer is decided
	// A gated Conn (see Gate) is interrupted only while idle, and only a
	// read that the gate says starts a message.
	gate        Gate
	idle        bool // the reader waits between messages (SetIdle)
	interrupted bool // a read returned ErrMigrating, and no Handoff came
	watching    bool // the reader reads only to watch for the peer (Watch)
	// held, if not nil, is closed to wake the reads held while watching
	// (see Watch) when what they wait for may have changed.
	held chan struct{}
}

type connPhase uint8

const (
	phaseIdle      connPhase = iota
	phaseQuiescing           // Read fails with ErrMigrating
	phaseArrived             // Handoff waits for the outcome
	phaseMigrated            // the successor has it; closed here
	phaseClosed              // closed by the application
)

// State returns the session state the predecessor handed over with the
// connection, or nil for a connection tracked here.
func (c *Conn) State() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Buffered returns how many bytes handed over with the connection Read
// has not returned yet.
func (c *Conn) Buffered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Read reads what the predecessor handed over first, then from the
// connection. While the connection is being migrated it returns
// ErrMigrating; see Handoff.
func (c *Conn) Read(b []byte) (int, error) {
	for {
		c.mu.Lock()
		switch c.phase {
		case phaseQuiescing:
			if c.interruptible(len(b)) {
				c.interrupted = true
				c.mu.Unlock()
				return 0, c.migrating()
			}
			if c.watching && len(c.pending) == 0 {
				if !c.rdl.IsZero() && !time.Now().Before(c.rdl) {
					c.mu.Unlock()
					return 0, &net.OpError{Op: "read", Net: c.network, Err: os.ErrDeadlineExceeded}
				}
				if c.held == nil {
					c.held = make(chan struct{})
				}
				held := c.held
				c.mu.Unlock()
				<-held
				continue
			}
		case phaseArrived:
			c.mu.Unlock()
			return 0, c.migrating()
		case phaseMigrated:
			c.mu.Unlock()
			return 0, net.ErrClosed
		}
		if len(c.pending) > 0 {
			n := copy(b, c.pending)
			c.pending = c.pending[n:]
			if len(c.pending) == 0 {
				c.pending = nil
			}
			c.idle = false
			c.mu.Unlock()
			return n, nil
		}
		gated := c.gate != nil
		c.mu.Unlock()
		n, err := c.Conn.Read(b)
		if n > 0 && gated {
			// The reader holds bytes of its next message now: until its
			// owner says it is idle again, no read starts a message (a
			// header line longer than the reader's buffer is read in
			// full-sized reads).
			c.mu.Lock()
			c.idle = false
			c.mu.Unlock()
		}
		if n > 0 || err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		c.mu.Lock()
		retry := false
		switch {
		case c.phase != phaseQuiescing:
			// A migration that gave up may have interrupted this read
			// before it put the deadline back.
			retry = c.rdl.IsZero() || time.Now().Before(c.rdl)
		case c.interruptible(len(b)):
			c.interrupted = true
			c.mu.Unlock()
			return 0, c.migrating()
		default:
			// A gated connection whose reader holds part of a message:
			// it stays, and reads on (interruptible put the deadline
			// back).
			retry = c.rdl.IsZero() || time.Now().Before(c.rdl)
		}
		c.mu.Unlock()
		if !retry {
			return n, err
		}
	}
}

// interruptible reports, with c.mu held and the connection quiescing,
// whether a read of n bytes may end in ErrMigrating: any read, unless the
// Conn is gated; then only one the gate says starts a message, made while
// idle. Any other read first puts back the deadline and reads on.
func (c *Conn) interruptible(n int) bool {
	if c.gate == nil {
		return true
	}
	if c.idle && c.gate.AtBoundary(n) {
		return true
	}
	c.idle = false
	c.Conn.SetReadDeadline(c.rdl)
	return false
}

// migrating is the error of a read that a migration interrupted: an
// OpError, as the net package's read errors are, so that net/http drops
// the connection without answering. It names no addresses: a migrated
// connection looks its addresses up on first use, which would cost two
// system calls per connection here.
func (c *Conn) migrating() error {
	return &net.OpError{Op: "read", Net: c.network, Err: ErrMigrating}
}

// A Gate stands between a Conn and a reader that cannot call Handoff
// itself, such as net/http's server: it says which reads start a message,
// and takes the connection when the reader lets go of it. A gated Conn is
// interrupted only while its owner says it is idle (SetIdle) and before
// Read has returned a byte since, and only in a read that AtBoundary
// approves; its reader, on ErrMigrating, closes the Conn, and the Conn
// calls Abandoned instead of closing. graceful's HTTPServer is the gate of
// the connections it serves.
type Gate interface {
	// AtBoundary reports whether a read of n bytes, the first since the
	// Conn became idle, starts the next message: whether the reader holds
	// nothing of it. It is called with the Conn locked, and must not call
	// its methods.
	AtBoundary(n int) bool
	// Abandoned is called, instead of closing, when the reader closes
	// the Conn after a read of it ended in ErrMigrating: the gate hands
	// the connection over (Handoff) or has it served anew.
	Abandoned(c *Conn)
}

// SetGate makes g the gate of c (see Gate); nil ungates it.
func (c *Conn) SetGate(g Gate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gate = g
	c.wake()
}

// Watch tells a gated Conn that, until it is idle again (SetIdle(true)),
// its reader reads it only to watch for the peer: net/http, once a
// request's body is read whole, reads one byte in the background while
// the handler runs, and stops that read (with a read deadline that has
// passed) only after the response is written. A request the client sends
// as soon as it has its answer may reach that read, which then holds its
// first byte (a pipelined request): the connection could not move at that
// boundary. So while a migration waits for a watching Conn, its reads
// wait, without reading, until the reader sets a read deadline that has
// passed or the migration no longer waits for the connection: the next
// message stays in the socket, and moves with the connection. Meanwhile a
// peer that hangs up is not seen, nor a read deadline that passes by
// itself, until the reader comes back or the migration stops waiting
// (QuiesceTimeout at the latest).
func (c *Conn) Watch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gate == nil {
		return
	}
	c.watching = true
	if c.phase == phaseQuiescing {
		// A read already in the socket comes back, and waits.
		c.Conn.SetReadDeadline(aLongTimeAgo)
	}
}

// wake wakes the reads held while watching, with c.mu held, so that they
// look again at the phase, the read deadline and idleness.
func (c *Conn) wake() {
	if c.held != nil {
		close(c.held)
		c.held = nil
	}
}

// SetIdle tells a gated Conn whether its reader waits between messages
// (net/http: the connection waits for its next request). A Conn that
// becomes idle while a migration waits for it is interrupted at once.
// Read returning a byte ends idleness too.
func (c *Conn) SetIdle(idle bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gate == nil {
		return
	}
	c.idle = idle
	if idle {
		c.watching = false
	}
	c.wake()
	if idle && c.phase == phaseQuiescing {
		c.Conn.SetReadDeadline(aLongTimeAgo)
	}
}

// Quiescing reports whether a migration waits for c's reader to reach a
// message boundary: until it is over, the connection may still move. A
// server that ends its connections at a takeover ("Connection: close")
// leaves these be.
func (c *Conn) Quiescing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.phase == phaseQuiescing || c.phase == phaseArrived
}

// Stay takes c out of migration for good: it stays with this process,
// ungated, and a migration waiting for it stops waiting. Call it when the
// connection turns to a protocol its reader cannot hand over at a message
// boundary (graceful's HTTPServer: HTTP/2, a hijacked connection). It has
// no effect on a connection already offered to the successor.
func (c *Conn) Stay() {
	c.mu.Lock()
	if c.phase == phaseArrived || c.phase == phaseMigrated || c.phase == phaseClosed {
		c.mu.Unlock()
		return
	}
	if c.phase == phaseQuiescing {
		c.phase = phaseIdle
		c.quiet.leave(c)
		c.quiet = nil
		// A read interrupted meanwhile reads on (see Read).
		c.Conn.SetReadDeadline(c.rdl)
	}
	c.gate, c.idle, c.interrupted, c.watching = nil, false, false, false
	c.wake()
	c.mu.Unlock()
	c.t.untrack(c)
}

// SetDeadline sets the read and write deadlines, as net.Conn's does.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline, as net.Conn's does; a migration
// interrupts reads whatever the deadline, and puts it back if the
// connection stays.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rdl = t
	c.wake()
	// While a migration waits for this connection, only a deadline that
	// has passed takes effect: it ends a read sooner, as net/http's abort
	// of its background read must (else the response never finishes and
	// the connection never reaches a message boundary); a later one would
	// undo the interruption.
	if c.phase != phaseIdle && (t.IsZero() || t.After(time.Now())) {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// Close closes the connection, unless it has migrated: then the
// successor's copy is the connection, and Close does nothing. While the
// connection is offered to the successor (its reader waits in Handoff),
// Close takes effect when the migration is decided: if the successor took
// the connection, it is the successor's.
func (c *Conn) Close() error {
	c.mu.Lock()
	if g := c.gate; g != nil && c.interrupted && (c.phase == phaseQuiescing || c.phase == phaseIdle) {
		// The reader gave up on the connection because a migration
		// interrupted its read for the next message: the gate hands it
		// over, or has it served anew.
		c.interrupted = false
		c.mu.Unlock()
		g.Abandoned(c)
		return nil
	}
	switch c.phase {
	case phaseMigrated, phaseClosed:
		c.mu.Unlock()
		return nil
	case phaseArrived:
		// The CONNS batch may be sending this very descriptor.
		c.closing = true
		c.mu.Unlock()
		return nil
	case phaseQuiescing:
		// The migration waits for nobody now.
		c.quiet.leave(c)
	}
	c.phase = phaseClosed
	c.wake()
	c.mu.Unlock()
	c.t.untrack(c)
	return c.Conn.Close()
}

// CloseWrite and CloseRead shut down one side of the connection, if the
// connection inside has them (a *net.TCPConn or *net.UnixConn does): as
// the connection itself would, so that net/http can send its FIN before it
// closes a connection. Once the connection is offered to the successor,
// or has migrated, they fail and leave it be: the successor's copy is the
// same socket.
func (c *Conn) CloseWrite() error { return c.shutdown(true) }
func (c *Conn) CloseRead() error  { return c.shutdown(false) }

func (c *Conn) shutdown(write bool) error {
	// Held through the call, so that the connection is not offered
	// meanwhile.
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.phase {
	case phaseArrived:
		return &net.OpError{Op: "close", Net: c.network, Err: ErrMigrating}
	case phaseMigrated, phaseClosed:
		return &net.OpError{Op: "close", Net: c.network, Err: net.ErrClosed}
	}
	if write {
		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
			return cw.CloseWrite()
		}
	} else if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return &net.OpError{Op: "close", Net: c.network, Err: errors.ErrUnsupported}
}

// Handoff offers the connection to the successor, at a message boundary:
// state is the session state, buffered the bytes read from the connection
// but not processed, in order. Call it from the goroutine that reads the
// connection, after Read returned ErrMigrating. It blocks until the
// migration is decided, and reports whether the successor has the
// connection. If so, the connection is closed here (the successor's copy
// keeps it open): do not read, write or shut it down. If not, serve on:
// the next Read returns buffered first. Handoff reads state and buffered
// until it returns and keeps neither: another goroutine must not change
// them meanwhile.
func (c *Conn) Handoff(state, buffered []byte) bool {
	return c.handoff(state, buffered, nil)
}

// handoff is Handoff with the unprocessed bytes in two parts, a then b.
// Nothing is copied here: the caller waits until the migration is decided,
// and the CONNS batch copies the offer into a buffer that it reuses from
// batch to batch. With 10,000 connections, memory touched for the first
// time is much of the cost.
func (c *Conn) handoff(state, a, b []byte) bool {
	c.mu.Lock()
	// Bytes handed over before this one's and not read yet come last.
	o := offer{state: state, rest: [3][]byte{a, b, c.pending}}
	c.pending = nil
	if c.phase != phaseQuiescing {
		c.pending = o.buffered()
		c.mu.Unlock()
		return false
	}
	c.out = o
	c.phase = phaseArrived
	c.quiet.arrive(c)
	if c.decided.L == nil {
		c.decided.L = &c.mu
	}
	for c.phase == phaseArrived {
		c.decided.Wait()
	}
	if c.phase == phaseMigrated {
		c.mu.Unlock()
		return true
	}
	c.pending = o.buffered()
	c.mu.Unlock()
	return false
}

// offer is a connection's CONNS item payload in parts: u32 length S of the
// state, S bytes of state, then the bytes read but not processed.
type offer struct {
	state []byte
	rest  [3][]byte // the unprocessed bytes, in order
}

func (o *offer) size() int { return handoffmsg.ConnPayloadLen(o.state, o.rest[:]...) }

func (o *offer) appendTo(dst []byte) []byte {
	return handoffmsg.AppendConnPayload(dst, o.state, o.rest[:]...)
}

// buffered returns the unprocessed bytes in one new slice, or nil.
func (o *offer) buffered() []byte {
	n := o.size() - 4 - len(o.state)
	if n == 0 {
		return nil
	}
	b := make([]byte, 0, n)
	for _, r := range o.rest {
		b = append(b, r...)
	}
	return b
}

// HandoffReader is Handoff for a server that reads the connection through
// r, a bufio.Reader on the Conn: the bytes handed over are partial (what
// the read that failed with ErrMigrating returned) followed by what r
// holds. If the connection stays, r yields them again.
func (c *Conn) HandoffReader(state []byte, r *bufio.Reader, partial []byte) bool {
	// handoff is done with what r holds when it returns; if the
	// connection stays, r reads it back from the Conn.
	held, _ := r.Peek(r.Buffered())
	ok := c.handoff(state, partial, held)
	r.Discard(len(held))
	return ok
}

func nullIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}
