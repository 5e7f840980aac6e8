package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/unixmsg"
)

// The late part of a migration (SendOptions.Late, FeatureLateConns): the
// first part ends, and DONE follows, as soon as the readers ready to stop
// have stopped; the readers of gated connections still busy (a response
// being written) stop later, and each moves then, on its own, in a LATE
// batch the successor answers with ADOPTED. A connection waiting in Handoff
// thus waits for nobody else's, and the successor serves it at once.
//
// A LATE batch is decided alone: ADOPTED commits it, and the successor
// serves it once it has written ADOPTED; anything else resumes it, after
// the predecessor hung up, so that a successor about to answer finds
// nobody (as with DONE, only an answer written in the instant before the
// predecessor gives up could leave both serving).

// Late sends, after Commit, the connections whose readers reach Handoff
// from now on, in LATE batches on c as they arrive, and commits each batch
// the successor adopts, until every reader has arrived, the quiesce timeout
// passes, or stop is closed; the readers not arrived by then keep their
// connections. It takes ownership of c and closes it. On error, the
// connections not committed go back to their readers (once c is closed).
// It returns the number of connections moved. Without SendOptions.Late it
// only closes c. Nil-safe.
func (o *Outgoing) Late(c *unixmsg.Conn, stop <-chan struct{}) (int, error) {
	var q *quiet
	if o != nil {
		q, o.late = o.late, nil
	}
	if q == nil {
		c.Close()
		return 0, nil
	}
	bt := newBatcher()
	first := len(o.conns) // numbered on from the first part
	moved := 0
	resume := func(cs []*Conn) {
		// Hang up first: a successor about to answer must fail to.
		c.Close()
		for _, mc := range append(cs, q.drain()...) {
			mc.decide(false)
		}
	}
	for {
		cs, last := q.takeLate(connsPerBatch, stop)
		select {
		case <-stop:
			resume(cs)
			return moved, nil
		default:
		}
		fit := cs[:0]
		for _, mc := range cs {
			if mc.out.size() > maxConnPayload {
				mc.decide(false)
				continue
			}
			fit = append(fit, mc)
		}
		if len(fit) > 0 {
			if err := sendLate(c, bt, fit, first+moved); err != nil {
				resume(fit)
				return moved, fmt.Errorf("migrating connections after DONE: %w", err)
			}
			moved += len(fit)
			q.log.Debug("graceful: connections moved after DONE", slog.Int("count", len(fit)))
		}
		if last {
			c.Close()
			return moved, nil
		}
	}
}

// sendLate sends cs, numbered from first, in one LATE batch, and commits
// them when the successor adopts them.
func sendLate(c *unixmsg.Conn, bt *batcher, cs []*Conn, first int) error {
	r := bt.build(cs, first, handoffmsg.Message{Type: handoffmsg.MsgLate, Items: uint32(len(cs))})
	if r.err != nil {
		return r.err
	}
	err := c.SendNoAck(context.Background(), r.b)
	bt.sent(r)
	if err != nil {
		return err
	}
	m, err := handoffmsg.Receive(c)
	if err != nil {
		return fmt.Errorf("waiting for ADOPTED: %w", err)
	}
	switch {
	case m.Type == handoffmsg.MsgError:
		return m.Err()
	case m.Type != handoffmsg.MsgAdopted:
		err = m.Expect(handoffmsg.MsgAdopted)
	case int(m.Items) != len(cs):
		err = handoffmsg.Errf(handoffmsg.ErrMalformed, "successor adopted %d connections of %d", m.Items, len(cs))
	}
	if err != nil {
		handoffmsg.SendError(c, handoffmsg.CodeProtocol, err.Error())
		return err
	}
	for _, mc := range cs {
		mc.decide(true)
	}
	return nil
}

// ReceiveLate runs the successor's side of the late part of a migration,
// after DONE and Adopt (FeatureLateConns): it receives LATE batches on c,
// checks each as Receive does, within what Receive left of the bounds,
// answers ADOPTED and adopts its connections, until the predecessor hangs
// up. It returns how many connections it adopted; on error the batch at
// hand is closed (the predecessor still holds its copies).
func (t *Tracker) ReceiveLate(c *unixmsg.Conn, opts ReceiveOptions) (int, error) {
	t.mu.Lock()
	left := t.left
	t.mu.Unlock()
	n := 0
	for {
		b, err := c.Receive()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, fmt.Errorf("receiving connections after DONE: %w", err)
		}
		conns, err := takeLate(b, t, &left)
		b.Close()
		if err == nil && opts.Check != nil {
			if err = opts.Check(conns); err != nil {
				handoffmsg.SendError(c, handoffmsg.CodeAborted, err.Error())
			}
		} else if err != nil {
			code := handoffmsg.CodeProtocol
			if errors.Is(err, ErrLimit) {
				code = handoffmsg.CodeAborted
			}
			handoffmsg.SendError(c, code, err.Error())
		}
		if err == nil {
			err = handoffmsg.Send(c, handoffmsg.Message{Type: handoffmsg.MsgAdopted, Items: uint32(len(conns))})
		}
		if err != nil {
			for _, mc := range conns {
				mc.Conn.Close()
			}
			return n, err
		}
		t.Adopt(conns)
		n += len(conns)
	}
}

// takeLate checks one LATE batch and converts its connections for t.
func takeLate(b *unixmsg.Batch, t *Tracker, left *budget) ([]*Conn, error) {
	m, err := handoffmsg.Parse(b.Payload())
	if err != nil {
		return nil, err
	}
	switch {
	case m.Type != handoffmsg.MsgLate:
		return nil, m.Expect(handoffmsg.MsgLate)
	case int(m.Items) != b.Len():
		return nil, handoffmsg.Errf(handoffmsg.ErrMalformed, "LATE announces %d connections, %d arrived", m.Items, b.Len())
	}
	items, err := takeItems(b, left)
	if err != nil {
		return nil, err
	}
	slots := make([]connSlot, len(items))
	conns := make([]*Conn, 0, len(items))
	var cerr error
	for k, it := range items {
		s := &slots[k]
		var nc net.Conn
		nc, err = s.adopt(it.fd, it.kind)
		if err != nil {
			cerr = err
			continue
		}
		c := &s.c
		c.Conn, c.t, c.network, c.state, c.pending = nc, t, it.network, it.state, nullIfEmpty(it.buffered)
		conns = append(conns, c)
	}
	if cerr != nil {
		for _, c := range conns {
			c.Conn.Close()
		}
		return nil, cerr
	}
	return conns, nil
}
