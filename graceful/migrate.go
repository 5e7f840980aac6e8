package graceful

import (
	"bufio"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fdpass/fdpass/internal/prefault"
	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg"
)

// Conn is an established connection that can migrate to the successor at
// a takeover (live migration). Get one from Process.Track, or, in the
// successor, from Process.MigratedConns. It is a net.Conn whose Read
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
	p       *Process
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
	// Served by an HTTPServer: net/http reads it, and a migration
	// interrupts only a read for the next request with nothing buffered.
	hs          *HTTPServer
	idle        bool // waiting for the next request
	interrupted bool // a read returned ErrMigrating; net/http gave up on it
}

type connPhase uint8

const (
	phaseIdle      connPhase = iota
	phaseQuiescing           // Read fails with ErrMigrating
	phaseArrived             // Handoff waits for the outcome
	phaseMigrated            // the successor has it; closed here
	phaseClosed              // closed by the application
)

// migration is a Process's part in live migration.
type migration struct {
	mu      sync.Mutex
	tracked map[*Conn]struct{}
	in      []*Conn            // migrated in, not yet returned by MigratedConns
	sinks   []func(*Conn) bool // take migrated connections before in does
	agreed  bool               // the predecessor offered FeatureMigrate
	stream  bool               // and FeatureStreamConns
	// perBatch, if set, replaces connsPerBatch (tests).
	perBatch int
}

// Defaults and bounds of the migration phase.
const (
	defaultQuiesce = 5 * time.Second
	// connsPerBatch bounds the connections in one CONNS batch. The
	// predecessor holds up to batchesAhead batches at once (one being
	// sent, the others built ahead); they borrow the connections'
	// descriptors rather than duplicate them.
	connsPerBatch = 1024
	batchesAhead  = 3
	// bytesPerBatch bounds the item payloads of one CONNS batch.
	bytesPerBatch = 32 << 20
	// sendBuffer is the send buffer the predecessor asks for during the
	// migration phase: room for a few batches. The kernel caps it at
	// twice net.core.wmem_max: with the usual 208 KiB that is about 416
	// KiB, six 64 KiB frames of the 18 or so of a batch; the project's
	// VMs allow 4 MiB.
	sendBuffer = 4 << 20
	// interruptTick is how long take waits for an arrival before it
	// interrupts more readers.
	interruptTick = 5 * time.Millisecond
	// answerWait bounds the ERROR to a successor that spoke out of turn.
	answerWait = time.Second
	// convertPiece is how many received connections a conversion job
	// holds.
	convertPiece = 128
	metaConn     = "conn"
)

// Track registers c for migration and returns it wrapped in a Conn, which
// the application reads and writes instead of c. The Conn takes ownership
// of c: closing the Conn closes c. Tracking has effect only with
// Options.Migrate set; otherwise the Conn is c with a Read that returns
// what c's does.
func (p *Process) Track(c net.Conn) *Conn {
	mc := &Conn{Conn: c, p: p, network: c.LocalAddr().Network()}
	p.mig.mu.Lock()
	if p.mig.tracked == nil {
		p.mig.tracked = make(map[*Conn]struct{})
	}
	p.mig.tracked[mc] = struct{}{}
	p.mig.mu.Unlock()
	return mc
}

func (p *Process) untrack(c *Conn) {
	p.mig.mu.Lock()
	delete(p.mig.tracked, c)
	p.mig.mu.Unlock()
}

// MigratedConns returns the connections the predecessor handed over, once
// Ready has returned, and each only once (those an HTTPServer serves
// excepted). They are tracked by this Process, so they move on at the next
// takeover. Serve each as the predecessor did: its State says where the
// session stands, and its first Reads return the bytes the predecessor had
// read but not processed.
//
// On Linux the net.Conn inside a migrated Conn is built on an *os.File
// (reads, writes and deadlines through the runtime poller, SyscallConn for
// socket options), not a *net.TCPConn: that costs a fifth of what
// net.FileConn does, which matters with thousands of connections.
func (p *Process) MigratedConns() []*Conn {
	p.mig.mu.Lock()
	defer p.mig.mu.Unlock()
	in := p.mig.in
	p.mig.in = nil
	return in
}

// State returns the session state the predecessor handed over with the
// connection, or nil for a connection tracked here.
func (c *Conn) State() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
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
			c.mu.Unlock()
			return n, nil
		}
		c.mu.Unlock()
		n, err := c.Conn.Read(b)
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
			// An HTTP connection whose reader holds part of a request:
			// it stays, and reads on.
			c.idle = false
			c.Conn.SetReadDeadline(c.rdl)
			retry = c.rdl.IsZero() || time.Now().Before(c.rdl)
		}
		c.mu.Unlock()
		if !retry {
			return n, err
		}
	}
}

// interruptible reports, with c.mu held and the connection quiescing,
// whether a read of n bytes may end in ErrMigrating. For an HTTP
// connection that is a read for the next request into net/http's empty
// reader; any other read first puts back the deadline and reads on.
func (c *Conn) interruptible(n int) bool {
	if c.hs == nil {
		return true
	}
	if c.idle && n == httpReadBuf {
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

// httpState follows net/http's view of the connection.
func (c *Conn) httpState(st http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch st {
	case http.StateNew, http.StateIdle:
		c.idle = true
		if c.phase == phaseQuiescing {
			c.Conn.SetReadDeadline(aLongTimeAgo)
		}
	case http.StateActive:
		c.idle = false
	}
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
	if c.hs != nil && c.interrupted && (c.phase == phaseQuiescing || c.phase == phaseIdle) {
		// net/http gave up on the connection because a migration
		// interrupted its read for the next request: hand it over, or if
		// it stays, serve it anew.
		c.interrupted = false
		c.mu.Unlock()
		if !c.handoff([]byte(httpState), nil, nil) {
			c.hs.resume(c)
		}
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
		c.quiet.arrive(nil)
	}
	c.phase = phaseClosed
	c.mu.Unlock()
	c.p.untrack(c)
	return c.Conn.Close()
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

func (o *offer) size() int {
	n := 4 + len(o.state)
	for _, r := range o.rest {
		n += len(r)
	}
	return n
}

func (o *offer) appendTo(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(o.state)))
	dst = append(dst, o.state...)
	for _, r := range o.rest {
		dst = append(dst, r...)
	}
	return dst
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

// decodeConnPayload splits a CONNS item's payload: u32 length S of the
// state, S bytes of state, then the bytes read but not processed.
func decodeConnPayload(b []byte) (state, buffered []byte, err error) {
	if len(b) < 4 {
		return nil, nil, errf(ErrMalformed, "connection payload of %d bytes", len(b))
	}
	s := binary.LittleEndian.Uint32(b)
	if uint64(s) > uint64(len(b)-4) {
		return nil, nil, errf(ErrMalformed, "connection state of %d bytes in a payload of %d", s, len(b))
	}
	return b[4 : 4+s : 4+s], b[4+s:], nil
}

// features returns the feature bits this process supports.
func (p *Process) features() uint32 {
	if p.opts.Migrate {
		return FeatureMigrate | FeatureStreamConns
	}
	return 0
}

// outgoing is a migration in progress on the predecessor: the connections
// offered, each waiting in Handoff for the outcome.
type outgoing struct {
	conns []*Conn
}

// quiet is a quiesce in progress: it counts the readers it waits for and
// queues the connections whose readers reached Handoff, in the order they
// did. Only the last reader to arrive, or the one that fills a batch, wakes
// the goroutine that takes them: with thousands of connections, waking it
// for each one cost as much as interrupting them.
type quiet struct {
	p     *Process
	snap  []*Conn // the connections being quiesced
	next  int     // snap[:next] are interrupted
	left  atomic.Int64
	all   chan struct{} // closed when left reaches 0
	kick  chan struct{} // a batch has arrived
	batch int           // queue length that kicks; 0: none
	timer *time.Timer

	mu    sync.Mutex
	queue []*Conn // arrived, not taken yet
	over  bool    // no more will arrive
}

// arrive says that c's reader reached Handoff, or (c nil) that a
// connection being quiesced was closed, each with c.mu held; startQuiesce
// also gives up its own count with it.
func (q *quiet) arrive(c *Conn) {
	if c != nil {
		q.mu.Lock()
		q.queue = append(q.queue, c)
		full := len(q.queue) == q.batch
		q.mu.Unlock()
		if full {
			q.wake()
		}
	}
	if q.left.Add(-1) == 0 {
		close(q.all)
	}
}

// wake wakes the goroutine waiting in take, if any, to look again.
func (q *quiet) wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// startQuiesce stops the reader of every tracked connection at its next
// message boundary. Those that reach Handoff within the quiesce timeout
// queue up to be taken; the others stay. With batch 0, every reader is
// interrupted now and take wakes only once the quiesce is over. Otherwise
// readers are interrupted batch by batch, ahead of take: thousands
// interrupted at once would all run before the goroutine that sends them,
// and take wakes whenever batch connections wait.
func (p *Process) startQuiesce(batch int) *quiet {
	p.mig.mu.Lock()
	snap := make([]*Conn, 0, len(p.mig.tracked))
	for c := range p.mig.tracked {
		snap = append(snap, c)
	}
	p.mig.mu.Unlock()
	wait := p.opts.QuiesceTimeout
	if wait <= 0 {
		wait = min(defaultQuiesce, p.opts.Timeout/2)
	}
	q := &quiet{
		p: p, batch: batch,
		snap:  snap[:0],
		all:   make(chan struct{}),
		kick:  make(chan struct{}, 1),
		queue: make([]*Conn, 0, len(snap)),
		timer: time.NewTimer(wait),
	}
	// The count starts at one, which this goroutine gives up once the
	// phases are set: readers that arrive meanwhile cannot bring it to
	// zero early. A reader that is not interrupted yet stops when it comes
	// back for the next message.
	q.left.Store(1)
	for _, c := range snap {
		c.mu.Lock()
		if c.phase == phaseIdle {
			q.left.Add(1)
			c.phase = phaseQuiescing
			c.quiet = q
			q.snap = append(q.snap, c)
		}
		c.mu.Unlock()
	}
	if batch > 0 {
		q.interrupt(2 * batch)
	} else {
		q.interrupt(len(q.snap))
	}
	q.arrive(nil)
	return q
}

// interrupt interrupts the read of the next n readers still quiescing,
// which then find their connection quiescing.
func (q *quiet) interrupt(n int) {
	end := q.next + min(n, len(q.snap)-q.next)
	for _, c := range q.snap[q.next:end] {
		c.mu.Lock()
		if c.phase == phaseQuiescing && c.quiet == q && (c.hs == nil || c.idle) {
			c.Conn.SetReadDeadline(aLongTimeAgo)
		}
		c.mu.Unlock()
	}
	q.next = end
}

// take waits until n connections have arrived, or the quiesce is over, and
// takes up to n of them. last reports that none will follow. Only one
// goroutine takes. While it waits and no reader arrives, it interrupts n
// more every interruptTick: readers that never stop (a long response, a
// slow handler) must not hold up those not interrupted yet.
func (q *quiet) take(n int) (cs []*Conn, last bool) {
	var tick *time.Timer
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	for first := true; ; first = false {
		q.mu.Lock()
		over := q.over
		if len(q.queue) >= n || over {
			k := min(n, len(q.queue))
			cs, q.queue = q.queue[:k:k], q.queue[k:]
			last = over && len(q.queue) == 0
			q.mu.Unlock()
			return cs, last
		}
		q.mu.Unlock()
		if first {
			q.interrupt(n)
		}
		var ticks <-chan time.Time
		if q.next < len(q.snap) {
			if tick == nil {
				tick = time.NewTimer(interruptTick)
			} else {
				tick.Reset(interruptTick)
			}
			ticks = tick.C
		}
		left := q.left.Load()
		select {
		case <-q.kick:
		case <-ticks:
			if q.left.Load() == left {
				q.interrupt(n)
			}
		case <-q.all:
			q.end()
		case <-q.timer.C:
			if late := q.end(); late > 0 {
				q.p.log.Info("graceful: connections did not reach a message boundary in time; they stay", slog.Int("count", late))
			}
		}
	}
}

// end ends the quiesce: readers not in Handoff yet keep their connections,
// and one that arrives later finds its connection idle and carries on. It
// returns how many stay so. Those that arrived can still be taken. It may
// be called again, and from another goroutine than take's.
func (q *quiet) end() (late int) {
	q.mu.Lock()
	over := q.over
	q.mu.Unlock()
	if over {
		return 0
	}
	q.timer.Stop()
	if q.left.Load() > 0 {
		for _, c := range q.snap {
			c.mu.Lock()
			if c.phase == phaseQuiescing && c.quiet == q {
				c.phase = phaseIdle
				c.quiet = nil
				c.Conn.SetReadDeadline(c.rdl)
				late++
			}
			c.mu.Unlock()
		}
	}
	q.mu.Lock()
	q.over = true
	q.mu.Unlock()
	return late
}

// quiesce interrupts the readers of every tracked connection and returns
// those that reach Handoff within the quiesce timeout; the others stay.
func (p *Process) quiesce() []*Conn {
	cs, _ := p.startQuiesce(0).take(math.MaxInt)
	return cs
}

var aLongTimeAgo = time.Unix(1, 0)

// migrateOut runs the predecessor's part of the migration phase, after
// READY: it quiesces the tracked connections, sends them, and waits for
// ADOPTED. With stream, CONNS batches go out while readers still arrive,
// the last one saying how many there were; without, the first goes once
// the quiesce is over. The caller commits or resumes the result; on error
// the connections have resumed.
func (p *Process) migrateOut(c *unixmsg.Conn, log *slog.Logger, stream bool) (*outgoing, error) {
	start := time.Now()
	per := cmp.Or(p.mig.perBatch, connsPerBatch)
	batch := 0
	if stream {
		batch = per
	}
	// Room for batches in the socket (as far as the kernel allows): a
	// sender that waits for room waits again for a processor, behind the
	// readers it woke.
	c.UnixConn().SetWriteBuffer(sendBuffer)
	q := p.startQuiesce(batch)
	// The successor says nothing until it has every connection, unless it
	// fails: listen meanwhile, so that the batches stop at once then (a
	// streamed migration may wait for readers for the whole quiesce
	// timeout).
	replies := make(chan reply, 1)
	listened := make(chan struct{})
	go func() {
		defer close(listened)
		m, err := receiveMessage(c)
		replies <- reply{m, err}
	}()
	out, quiet, err := p.sendConns(c, q, stream, per, replies)
	if err != nil {
		// Readers that have not arrived keep their connections; those
		// that did, sent or not, get them back.
		q.end()
		rest, _ := q.take(math.MaxInt)
		out.conns = append(out.conns, rest...)
		out.resume()
		// The listener must not take what the caller reads next (its
		// refusal lingers on the connection): stop it. (A listener cut
		// in the middle of a message leaves the connection broken, and
		// the refusal unsaid.)
		c.SetDeadline(aLongTimeAgo)
		<-listened
		select {
		case r := <-replies:
			// The successor's own reason is better than the broken
			// pipe it caused.
			if r.err == nil && r.m.Type == MsgError {
				err = fmt.Errorf("sending connections: %w", &HandoffError{Code: r.m.Code, Reason: r.m.Reason})
			}
		default:
		}
		var bad *protocolError
		if errors.As(err, &bad) {
			// Answered once every connection is back with its reader,
			// as sendError waits for the acknowledgement; the caller
			// sets its own deadline, if it keeps the connection.
			c.SetDeadline(time.Now().Add(answerWait))
			sendError(c, CodeProtocol, bad.Error())
		}
		return nil, err
	}
	total := len(out.conns)
	r := <-replies
	m, err := r.m, r.err
	answer := false
	if err == nil {
		switch {
		case m.Type == MsgError:
			err = &HandoffError{Code: m.Code, Reason: m.Reason}
		case m.Type != MsgAdopted:
			err = errf(ErrMalformed, "%s where ADOPTED was due", m.Type)
			answer = true
		case int(m.Items) != total:
			err = errf(ErrMalformed, "successor adopted %d connections of %d", m.Items, total)
			answer = true
		}
	}
	if err != nil {
		out.resume()
		if answer {
			sendError(c, CodeProtocol, err.Error())
		}
		return nil, fmt.Errorf("waiting for ADOPTED: %w", err)
	}
	log.Info("graceful: successor adopted connections", slog.Int("count", total), slog.Bool("streamed", stream),
		slog.Duration("quiesced", quiet.Sub(start)), slog.Duration("took", time.Since(start)))
	return out, nil
}

// protocolError is a message from the successor out of turn, which the
// predecessor answers with ERROR.
type protocolError struct{ error }

func (e *protocolError) Unwrap() error { return e.error }

// reply is the successor's answer to the CONNS batches.
type reply struct {
	m   Message
	err error
}

// sendConns sends the connections that q yields in CONNS batches of at
// most per (one, empty, if there are none), each built while the one
// before it is sent. A reply before the last batch is sent stops it. It
// returns the connections sent (on error, also those taken and not sent:
// they wait for the outcome) and when the quiesce was over.
func (p *Process) sendConns(c *unixmsg.Conn, q *quiet, stream bool, per int, replies <-chan reply) (*outgoing, time.Time, error) {
	// A connection whose state and bytes exceed what a CONNS item may
	// carry stays.
	maxPayload := unixmsg.DefaultLimits().MaxPayload
	// Items share their meta: a batch keeps it as it is.
	metas := map[string]unixmsg.Meta{}
	// The payloads of a batch are copied into one buffer, which serves
	// again once the batch is sent.
	bufs := make(chan []byte, batchesAhead)
	type built struct {
		b     *unixmsg.Batch
		buf   []byte // the batch's payloads
		final bool
		err   error
	}
	// build makes a batch of conns, the first numbered first, in a
	// migration of total (ConnsMore: not known yet).
	build := func(conns []*Conn, first int, total uint32) built {
		need := 0
		for _, mc := range conns {
			need += mc.out.size()
		}
		var buf []byte
		select {
		case buf = <-bufs:
		default:
		}
		if cap(buf) < need {
			buf = make([]byte, 0, need)
			prefault.Bytes(buf)
		}
		buf = buf[:0]
		b := new(unixmsg.Batch)
		b.Grow(len(conns))
		var meta unixmsg.Meta
		network := ""
		for k, mc := range conns {
			if meta == nil || mc.network != network {
				network = mc.network
				meta = metas[network]
				if meta == nil {
					meta = unixmsg.Meta{{Key: metaRole, Value: metaConn}, {Key: metaNetwork, Value: network}}
					metas[network] = meta
				}
			}
			start := len(buf)
			buf = mc.out.appendTo(buf)
			payload := buf[start:len(buf):len(buf)]
			// The batch borrows the connection's descriptor: it stays
			// open until the migration is decided (Close waits for
			// that), long after the batch is written.
			name := strconv.Itoa(first + k)
			var err error
			if sc, ok := mc.Conn.(syscall.Conn); ok {
				err = b.AddBorrowed(name, sc, meta, payload)
			} else {
				err = b.Add(name, mc.Conn, meta, payload)
			}
			if err != nil {
				b.Close()
				return built{err: fmt.Errorf("migrating connection %d: %w", first+k, err)}
			}
		}
		payload, err := AppendMessage(nil, Message{Type: MsgConns, Items: uint32(len(conns)), Total: total})
		if err != nil {
			b.Close()
			return built{err: err}
		}
		b.SetPayload(payload)
		return built{b: b, buf: buf}
	}
	// One goroutine takes the connections as they arrive and builds the
	// batches in order while earlier ones are sent: the first batch, which
	// everything waits for, gets a processor to itself, and at most
	// batchesAhead batches exist at once (one being sent, the rest built
	// or being built).
	out := new(outgoing)
	var over time.Time
	res := make(chan built, batchesAhead-2)
	stop := make(chan struct{})
	go func() {
		defer close(res)
		var pending []*Conn // taken, not in a batch yet
		// Those left on the way out still wait in Handoff: they are the
		// caller's to resume.
		defer func() { out.conns = append(out.conns, pending...) }()
		for last := false; !last; {
			var cs []*Conn
			if stream {
				cs, last = q.take(per)
			} else {
				cs, last = q.take(math.MaxInt)
			}
			if last {
				over = time.Now()
			}
			for _, mc := range cs {
				if mc.out.size() > maxPayload {
					mc.decide(false)
					continue
				}
				pending = append(pending, mc)
			}
			// Batches of at most per connections and about
			// bytesPerBatch bytes; until the quiesce is over, full ones
			// only. The last says how many there were.
			for {
				j, bytes := 0, 0
				for ; j < len(pending) && j < per && bytes < bytesPerBatch; j++ {
					bytes += pending[j].out.size()
				}
				if !last && j < per && bytes < bytesPerBatch {
					break
				}
				final := last && j == len(pending)
				total := ConnsMore
				if final || !stream {
					total = uint32(len(out.conns) + len(pending))
				}
				select {
				case <-stop:
					return
				default:
				}
				first := len(out.conns)
				r := build(pending[:j], first, total)
				r.final = final
				out.conns = append(out.conns, pending[:j]...)
				pending = pending[j:]
				select {
				case res <- r:
				case <-stop:
					if r.b != nil {
						r.b.Close()
					}
					return
				}
				if final {
					break
				}
			}
		}
	}()
	var err error
	fail := func(e error) {
		err = e
		// The builder may wait for readers: end the quiesce and wake it.
		close(stop)
		q.end()
		q.wake()
	}
	for {
		var r built
		select {
		case rp := <-replies:
			replies = nil
			if err == nil {
				if rp.err == nil && rp.m.Type == MsgError {
					rp.err = &HandoffError{Code: rp.m.Code, Reason: rp.m.Reason}
				}
				if rp.err == nil {
					// Answered with ERROR by the caller, once the
					// connections are back with their readers.
					rp.err = &protocolError{errf(ErrMalformed, "%s before the last CONNS", rp.m.Type)}
				}
				fail(fmt.Errorf("sending connections: %w", rp.err))
			}
			continue
		case b, ok := <-res:
			if !ok {
				return out, over, err
			}
			r = b
		}
		if err == nil {
			if r.err != nil {
				fail(r.err)
			} else if serr := c.SendNoAck(context.Background(), r.b); serr != nil {
				// Not acknowledged one by one: the next batch is on its
				// way while the successor checks this one, and ADOPTED
				// answers for them all.
				fail(fmt.Errorf("sending connections: %w", serr))
			} else if r.final {
				// What comes now is the answer.
				replies = nil
			}
		}
		if r.b != nil {
			r.b.Close()
			select {
			case bufs <- r.buf:
			default:
			}
		}
	}
}

// decide ends c's migration: migrated, or back to serving.
func (c *Conn) decide(migrated bool) {
	c.mu.Lock()
	if c.phase != phaseArrived {
		c.mu.Unlock()
		return
	}
	c.out, c.quiet = offer{}, nil
	closing := c.closing
	c.closing = false
	switch {
	case migrated:
		c.phase = phaseMigrated
		c.Conn.Close()
	case closing:
		// Closed by the application meanwhile.
		c.phase = phaseClosed
		c.Conn.Close()
	default:
		c.phase = phaseIdle
		c.Conn.SetReadDeadline(c.rdl)
	}
	c.decided.Broadcast()
	c.mu.Unlock()
	if migrated || closing {
		c.p.untrack(c)
	}
}

// resume gives every connection back to its reader. Nil-safe.
func (o *outgoing) resume() {
	if o == nil {
		return
	}
	for _, c := range o.conns {
		c.decide(false)
	}
}

// commit closes this process's copies: the successor has the connections.
// Nil-safe.
func (o *outgoing) commit() {
	if o == nil {
		return
	}
	for _, c := range o.conns {
		c.decide(true)
	}
}

// migrateIn runs the successor's part of the migration phase, after READY:
// it receives the CONNS batches, adopts every connection, and says
// ADOPTED. The connections are not served before DONE; on error they are
// closed (the predecessor still holds its copies). Connections are
// converted in parallel, and while the next batch arrives.
func (p *Process) migrateIn(c *unixmsg.Conn) ([]*Conn, error) {
	var (
		batches [][]*Conn
		wg      sync.WaitGroup
		emu     sync.Mutex
		cerr    error
	)
	// Converting a connection costs system calls and fresh memory. It
	// runs beside the receiving, on all processors but the one that
	// receives: with every processor converting, the receiving goroutine
	// waited for one (milliseconds per batch on two cores), and so did
	// the predecessor.
	type job struct {
		items []incoming
		cs    []*Conn
	}
	jobs := make(chan job, 4096)
	convert := func() {
		for j := range jobs {
			// One allocation for the piece's connections, populated at
			// once: in a new process, their memory is fresh, and page
			// faults would cost more than the rest of a Conn. (A
			// connection kept keeps its piece's memory.)
			slots := make([]connSlot, len(j.items))
			prefault.Slice(slots)
			for k, it := range j.items {
				s := &slots[k]
				nc, err := s.adopt(it.fd, it.kind)
				if err != nil {
					emu.Lock()
					cerr = cmp.Or(cerr, err)
					emu.Unlock()
					continue
				}
				c := &s.c
				c.Conn, c.p, c.network, c.state, c.pending = nc, p, it.network, it.state, nullIfEmpty(it.buffered)
				j.cs[k] = c
			}
		}
	}
	for range max(1, runtime.GOMAXPROCS(0)-1) {
		wg.Go(convert)
	}
	closed := false
	// converted waits for every connection received to be converted,
	// and helps: nothing is left to receive.
	converted := func() {
		if !closed {
			closed = true
			close(jobs)
			convert()
			wg.Wait()
		}
	}
	defer converted()
	fail := func(err error) ([]*Conn, error) {
		converted()
		for _, cs := range batches {
			for _, mc := range cs {
				if mc != nil {
					mc.Conn.Close()
				}
			}
		}
		return nil, err
	}
	start := time.Now()
	total, have := -1, 0
	for total < 0 || have < total {
		b, err := c.Receive()
		if err != nil {
			// Tell the predecessor why, if the connection still works (a
			// batch with a descriptor of another kind than declared).
			sendError(c, CodeProtocol, err.Error())
			return fail(fmt.Errorf("receiving connections: %w", err))
		}
		items, t, err := p.takeBatch(b, total, have)
		b.Close()
		if err != nil {
			sendError(c, CodeProtocol, err.Error())
			return fail(err)
		}
		total = t
		have += len(items)
		cs := make([]*Conn, len(items))
		batches = append(batches, cs)
		// In pieces, so that the last ones spread over every processor
		// once all is received.
		for i := 0; i < len(items); i += convertPiece {
			j := min(i+convertPiece, len(items))
			jobs <- job{items[i:j], cs[i:j]}
		}
	}
	received := time.Since(start)
	converted()
	p.log.Debug("graceful: received connections", slog.Int("count", have),
		slog.Duration("received", received), slog.Duration("adopted", time.Since(start)))
	if cerr != nil {
		sendError(c, CodeInternal, cerr.Error())
		return fail(cerr)
	}
	conns := make([]*Conn, 0, have)
	for _, cs := range batches {
		conns = append(conns, cs...)
	}
	if p.opts.Migrated != nil {
		if err := p.opts.Migrated(conns); err != nil {
			sendError(c, CodeAborted, err.Error())
			return fail(err)
		}
	}
	if err := sendMessage(context.Background(), c, Message{Type: MsgAdopted, Items: uint32(len(conns))}); err != nil {
		return fail(err)
	}
	return conns, nil
}

// intern returns the usual network names as constants: the value in a
// batch points into its record buffer, a cache miss to read each time the
// connection moves on.
func intern(network string) string {
	switch network {
	case "tcp":
		return "tcp"
	case "tcp4":
		return "tcp4"
	case "tcp6":
		return "tcp6"
	case "unix":
		return "unix"
	}
	return strings.Clone(network)
}

// incoming is one connection taken out of a CONNS batch.
type incoming struct {
	fd              int
	kind            kinds.Kind
	network         string
	state, buffered []byte
}

// takeBatch checks one CONNS batch, the first after have of a migration
// of total (-1: not known yet), and takes its descriptors. It returns the
// total as known after the batch. On error it takes nothing.
func (p *Process) takeBatch(b *unixmsg.Batch, total, have int) ([]incoming, int, error) {
	m, err := ParseMessage(b.Payload())
	if err != nil {
		return nil, total, err
	}
	switch {
	case m.Type == MsgError:
		return nil, total, &HandoffError{Code: m.Code, Reason: m.Reason}
	case m.Type != MsgConns:
		return nil, total, errf(ErrMalformed, "%s where CONNS was due", m.Type)
	case int(m.Items) != b.Len():
		return nil, total, errf(ErrMalformed, "CONNS announces %d connections, %d arrived", m.Items, b.Len())
	case m.Total == ConnsMore && !p.mig.stream:
		return nil, total, errf(ErrMalformed, "CONNS with more to follow, but streaming was not agreed")
	case m.Total == ConnsMore:
		// Streamed: the last batch says how many.
	case total >= 0 && int(m.Total) != total:
		return nil, total, errf(ErrMalformed, "CONNS total changed from %d to %d", total, m.Total)
	case have+b.Len() > int(m.Total):
		return nil, total, errf(ErrMalformed, "CONNS brings %d connections of %d", have+b.Len(), m.Total)
	case p.mig.stream && have+b.Len() != int(m.Total):
		return nil, total, errf(ErrMalformed, "the last streamed CONNS brings %d connections of %d", have+b.Len(), m.Total)
	}
	if m.Total != ConnsMore {
		total = int(m.Total)
	}
	items := make([]incoming, b.Len())
	prefault.Slice(items)
	for i, it := range b.Items() {
		if it.Kind != kinds.TCPConn && it.Kind != kinds.UnixConn {
			return nil, total, errf(ErrMalformed, "CONNS item %d is a %s", i, it.Kind)
		}
		state, buffered, err := decodeConnPayload(it.Payload)
		if err != nil {
			return nil, total, err
		}
		items[i] = incoming{kind: it.Kind, network: intern(it.Meta.Value(metaNetwork)), state: state, buffered: buffered}
	}
	for i := range items {
		// Checked above: every descriptor is there.
		items[i].fd, _ = b.TakeFDAt(i)
	}
	return items, total, nil
}

// adopted makes the connections received in the migration phase this
// process's, after DONE.
func (p *Process) adopted(conns []*Conn) {
	p.mig.mu.Lock()
	defer p.mig.mu.Unlock()
	if len(conns) > len(p.mig.tracked) {
		// Sized once: growing a map of thousands, doubling after
		// doubling, costs more than filling it.
		tracked := make(map[*Conn]struct{}, len(p.mig.tracked)+len(conns))
		for c := range p.mig.tracked {
			tracked[c] = struct{}{}
		}
		p.mig.tracked = tracked
	}
	sinks := p.mig.sinks
	for _, c := range conns {
		p.mig.tracked[c] = struct{}{}
	}
	rest := make([]*Conn, 0, len(conns))
	p.mig.mu.Unlock()
next:
	for _, c := range conns {
		for _, take := range sinks {
			if take(c) {
				continue next
			}
		}
		rest = append(rest, c)
	}
	p.mig.mu.Lock()
	if p.mig.in == nil {
		p.mig.in = rest
	} else {
		p.mig.in = append(p.mig.in, rest...)
	}
}
