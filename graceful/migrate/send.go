package migrate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"syscall"
	"time"

	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/internal/prefault"
	"github.com/fdpass/fdpass/unixmsg"
)

// Bounds of the predecessor's side.
const (
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
	// answerWait bounds the ERROR to a successor that spoke out of turn.
	answerWait = time.Second
)

// SendOptions configure the predecessor's side of a migration.
type SendOptions struct {
	// Stream sends CONNS batches while readers still arrive, the last
	// saying how many there were (FeatureStreamConns, agreed with the
	// successor); without it, the first batch goes once the quiesce is
	// over.
	Stream bool
	// Late, with Stream, ends the migration before DONE once the readers
	// ready to stop have (FeatureLateConns, agreed with the successor):
	// the gated connections whose readers are still busy move after
	// DONE, as they reach Handoff (Outgoing.Late), so that none waits for
	// another.
	Late bool
	// Quiesce bounds how long readers are waited for, counted from the
	// call; the latecomers stay.
	Quiesce time.Duration
	// Most, if positive, bounds the connections that move (the
	// successor's FeatureCapacity): beyond it, connections are not
	// quiesced, and stay with their readers.
	Most int
	// Logger, if not nil, hears how the migration went.
	Logger *slog.Logger
}

// Outgoing is a migration in progress on the predecessor: the connections
// offered, each waiting in Handoff for the outcome. The caller decides it
// with Commit or Resume; after Commit, Late moves the connections that
// come late.
type Outgoing struct {
	conns []*Conn
	late  *quiet // the quiesce Late goes on with
}

// Len returns the number of connections offered.
func (o *Outgoing) Len() int {
	if o == nil {
		return 0
	}
	return len(o.conns)
}

// Send runs the predecessor's part of the migration phase, after READY: it
// quiesces the tracked connections, sends them to the successor at the
// other end of c in CONNS batches, and waits for ADOPTED. The caller
// commits or resumes the result once DONE is acknowledged or not; on error
// the connections have resumed already.
func (t *Tracker) Send(c *unixmsg.Conn, opts SendOptions) (*Outgoing, error) {
	return t.send(c, opts, connsPerBatch)
}

// send is Send with batches of at most per connections.
func (t *Tracker) send(c *unixmsg.Conn, opts SendOptions, per int) (*Outgoing, error) {
	start := time.Now()
	log, stream := logger(opts.Logger), opts.Stream
	batch := 0
	var settle time.Duration
	if stream {
		batch = per
		if opts.Late {
			settle = lateSettle
		}
	}
	// Room for batches in the socket (as far as the kernel allows): a
	// sender that waits for room waits again for a processor, behind the
	// readers it woke.
	c.UnixConn().SetWriteBuffer(sendBuffer)
	q := t.startQuiesce(batch, opts.Quiesce, opts.Most, log)
	// The successor says nothing until it has every connection, unless it
	// fails: listen meanwhile, so that the batches stop at once then (a
	// streamed migration may wait for readers for the whole quiesce
	// timeout).
	replies := make(chan reply, 1)
	listened := make(chan struct{})
	go func() {
		defer close(listened)
		m, err := handoffmsg.Receive(c)
		replies <- reply{m, err}
	}()
	out, quiet, err := sendConns(c, q, stream, per, settle, replies)
	if settle > 0 {
		out.late = q
	}
	if err != nil {
		// Readers that have not arrived keep their connections; those
		// that did, sent or not, get them back.
		out.conns = append(out.conns, q.drain()...)
		out.late = nil
		out.Resume()
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
			if r.err == nil && r.m.Type == handoffmsg.MsgError {
				err = fmt.Errorf("sending connections: %w", r.m.Err())
			}
		default:
		}
		var bad *protocolError
		if errors.As(err, &bad) {
			// Answered once every connection is back with its reader,
			// as sendError waits for the acknowledgement; the caller
			// sets its own deadline, if it keeps the connection.
			c.SetDeadline(time.Now().Add(answerWait))
			handoffmsg.SendError(c, handoffmsg.CodeProtocol, bad.Error())
		}
		return nil, err
	}
	total := len(out.conns)
	r := <-replies
	m, err := r.m, r.err
	answer := false
	if err == nil {
		switch {
		case m.Type == handoffmsg.MsgError:
			err = m.Err()
		case m.Type != handoffmsg.MsgAdopted:
			err = m.Expect(handoffmsg.MsgAdopted)
			answer = true
		case int(m.Items) != total:
			err = handoffmsg.Errf(handoffmsg.ErrMalformed, "successor adopted %d connections of %d", m.Items, total)
			answer = true
		}
	}
	if err != nil {
		out.Resume()
		if answer {
			handoffmsg.SendError(c, handoffmsg.CodeProtocol, err.Error())
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
	m   handoffmsg.Message
	err error
}

// batcher builds the batches of a migration. Items share their meta: a
// batch keeps it as it is. The payloads of a batch are copied into one
// buffer, which serves again once the batch is sent.
type batcher struct {
	metas map[string]unixmsg.Meta
	bufs  chan []byte
}

func newBatcher() *batcher {
	return &batcher{metas: map[string]unixmsg.Meta{}, bufs: make(chan []byte, batchesAhead)}
}

// built is a batch ready to send.
type built struct {
	b     *unixmsg.Batch
	buf   []byte // the batch's payloads
	final bool
	err   error
}

// maxConnPayload bounds what one connection brings: one whose state and
// bytes exceed what an item may carry stays.
var maxConnPayload = unixmsg.DefaultLimits().MaxPayload

// build makes a batch of conns, the first numbered first, with m (CONNS
// or LATE) as its payload.
func (bt *batcher) build(conns []*Conn, first int, m handoffmsg.Message) built {
	need := 0
	for _, mc := range conns {
		need += mc.out.size()
	}
	var buf []byte
	select {
	case buf = <-bt.bufs:
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
			meta = bt.metas[network]
			if meta == nil {
				meta = unixmsg.Meta{{Key: handoffmsg.MetaRole, Value: handoffmsg.RoleConn}, {Key: handoffmsg.MetaNetwork, Value: network}}
				bt.metas[network] = meta
			}
		}
		start := len(buf)
		buf = mc.out.appendTo(buf)
		payload := buf[start:len(buf):len(buf)]
		// The batch borrows the connection's descriptor: it stays open
		// until the migration is decided (Close waits for that), long
		// after the batch is written.
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
	payload, err := handoffmsg.Append(nil, m)
	if err != nil {
		b.Close()
		return built{err: err}
	}
	b.SetPayload(payload)
	return built{b: b, buf: buf}
}

// sent releases a batch that was sent, or failed to be.
func (bt *batcher) sent(r built) {
	if r.b != nil {
		r.b.Close()
		select {
		case bt.bufs <- r.buf:
		default:
		}
	}
}

// sendConns sends the connections that q yields in CONNS batches of at
// most per (one, empty, if there are none), each built while the one
// before it is sent; settle is take's. A reply before the last batch is
// sent stops it. It returns the connections sent (on error, also those
// taken and not sent: they wait for the outcome) and when the quiesce was
// over.
func sendConns(c *unixmsg.Conn, q *quiet, stream bool, per int, settle time.Duration, replies <-chan reply) (*Outgoing, time.Time, error) {
	bt := newBatcher()
	build := func(conns []*Conn, first int, total uint32) built {
		return bt.build(conns, first, handoffmsg.Message{Type: handoffmsg.MsgConns, Items: uint32(len(conns)), Total: total})
	}
	// One goroutine takes the connections as they arrive and builds the
	// batches in order while earlier ones are sent: the first batch, which
	// everything waits for, gets a processor to itself, and at most
	// batchesAhead batches exist at once (one being sent, the rest built
	// or being built).
	out := new(Outgoing)
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
				cs, last = q.take(per, settle)
			} else {
				cs, last = q.take(math.MaxInt, 0)
			}
			if last {
				over = time.Now()
			}
			for _, mc := range cs {
				if mc.out.size() > maxConnPayload {
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
				total := handoffmsg.ConnsMore
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
				if rp.err == nil && rp.m.Type == handoffmsg.MsgError {
					rp.err = rp.m.Err()
				}
				if rp.err == nil {
					// Answered with ERROR by the caller, once the
					// connections are back with their readers.
					rp.err = &protocolError{handoffmsg.Errf(handoffmsg.ErrMalformed, "%s before the last CONNS", rp.m.Type)}
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
		bt.sent(r)
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
	c.wake()
	c.decided.Broadcast()
	c.mu.Unlock()
	if migrated || closing {
		c.t.untrack(c)
	}
}

// Resume gives every connection back to its reader: the migration
// failed. Nil-safe.
func (o *Outgoing) Resume() {
	if o == nil {
		return
	}
	for _, c := range o.conns {
		c.decide(false)
	}
	if q := o.late; q != nil {
		o.late = nil
		for _, c := range q.drain() {
			c.decide(false)
		}
	}
}

// Commit closes this process's copies: the successor has the connections.
// Nil-safe.
func (o *Outgoing) Commit() {
	if o == nil {
		return
	}
	for _, c := range o.conns {
		c.decide(true)
	}
}
