package migrate

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/internal/prefault"
	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg"
)

// convertPiece is how many received connections a conversion job holds.
const convertPiece = 128

// ReceiveOptions configure the successor's side of a migration.
type ReceiveOptions struct {
	// Stream accepts CONNS batches that say more follow
	// (FeatureStreamConns, agreed with the predecessor).
	Stream bool
	// Check, if set, is called with the connections before they are
	// acknowledged; an error refuses them all, and Receive fails.
	Check func([]*Conn) error
	// Logger, if not nil, hears how the migration went.
	Logger *slog.Logger
	// MaxConns bounds the connections of the whole migration. If zero,
	// 100,000.
	MaxConns int
	// MaxBytes bounds the state and unread bytes of the whole migration,
	// all connections together. If zero, 256 MiB.
	MaxBytes int64
}

// DefaultMaxConns bounds the connections a successor accepts when
// ReceiveOptions.MaxConns is zero.
const DefaultMaxConns = 100_000

// defaultMaxBytes bounds their state and unread bytes when
// ReceiveOptions.MaxBytes is zero.
const defaultMaxBytes = 256 << 20

// ErrLimit: the predecessor offers more connections, or more state and
// unread bytes, than ReceiveOptions allow; the successor refuses them all.
var ErrLimit = errors.New("graceful: migration exceeds the successor's bounds")

// budget is what a migration may still bring.
type budget struct {
	conns int
	bytes int64
}

// Receive runs the successor's part of the migration phase, after READY:
// it receives the CONNS batches from the predecessor at the other end of
// c, adopts every connection, and says ADOPTED. Serve the connections only
// after DONE, once Adopt has made them this process's; on error they are
// closed (the predecessor still holds its copies). Connections are
// converted in parallel, and while the next batch arrives.
func (t *Tracker) Receive(c *unixmsg.Conn, opts ReceiveOptions) ([]*Conn, error) {
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
				c.Conn, c.t, c.network, c.state, c.pending = nc, t, it.network, it.state, nullIfEmpty(it.buffered)
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
	left := budget{conns: cmp.Or(opts.MaxConns, DefaultMaxConns), bytes: cmp.Or(opts.MaxBytes, defaultMaxBytes)}
	total, have := -1, 0
	for total < 0 || have < total {
		b, err := c.Receive()
		if err != nil {
			// Tell the predecessor why, if the connection still works (a
			// batch with a descriptor of another kind than declared).
			handoffmsg.SendError(c, handoffmsg.CodeProtocol, err.Error())
			return fail(fmt.Errorf("receiving connections: %w", err))
		}
		items, n, err := takeBatch(b, opts.Stream, total, have, &left)
		b.Close()
		if err != nil {
			code := handoffmsg.CodeProtocol
			if errors.Is(err, ErrLimit) {
				code = handoffmsg.CodeAborted
			}
			handoffmsg.SendError(c, code, err.Error())
			return fail(err)
		}
		total = n
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
	logger(opts.Logger).Debug("graceful: received connections", slog.Int("count", have),
		slog.Duration("received", received), slog.Duration("adopted", time.Since(start)))
	if cerr != nil {
		handoffmsg.SendError(c, handoffmsg.CodeInternal, cerr.Error())
		return fail(cerr)
	}
	conns := make([]*Conn, 0, have)
	for _, cs := range batches {
		conns = append(conns, cs...)
	}
	if opts.Check != nil {
		if err := opts.Check(conns); err != nil {
			handoffmsg.SendError(c, handoffmsg.CodeAborted, err.Error())
			return fail(err)
		}
	}
	if err := handoffmsg.Send(c, handoffmsg.Message{Type: handoffmsg.MsgAdopted, Items: uint32(len(conns))}); err != nil {
		return fail(err)
	}
	// What ReceiveLate may still take.
	t.mu.Lock()
	t.left = left
	t.mu.Unlock()
	return conns, nil
}

// connKind is the kind of connected socket a network name stands for.
func connKind(network string) kinds.Kind {
	switch network {
	case "tcp", "tcp4", "tcp6":
		return kinds.TCPConn
	case "unix", "unixpacket":
		return kinds.UnixConn
	}
	return kinds.Invalid
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
func takeBatch(b *unixmsg.Batch, stream bool, total, have int, left *budget) ([]incoming, int, error) {
	m, err := handoffmsg.Parse(b.Payload())
	if err != nil {
		return nil, total, err
	}
	malformed := handoffmsg.ErrMalformed
	switch {
	case m.Type != handoffmsg.MsgConns:
		return nil, total, m.Expect(handoffmsg.MsgConns)
	case int(m.Items) != b.Len():
		return nil, total, handoffmsg.Errf(malformed, "CONNS announces %d connections, %d arrived", m.Items, b.Len())
	case m.Total == handoffmsg.ConnsMore && !stream:
		return nil, total, handoffmsg.Errf(malformed, "CONNS with more to follow, but streaming was not agreed")
	case m.Total == handoffmsg.ConnsMore:
		// Streamed: the last batch says how many.
	case total >= 0 && int(m.Total) != total:
		return nil, total, handoffmsg.Errf(malformed, "CONNS total changed from %d to %d", total, m.Total)
	case have+b.Len() > int(m.Total):
		return nil, total, handoffmsg.Errf(malformed, "CONNS brings %d connections of %d", have+b.Len(), m.Total)
	case stream && have+b.Len() != int(m.Total):
		return nil, total, handoffmsg.Errf(malformed, "the last streamed CONNS brings %d connections of %d", have+b.Len(), m.Total)
	}
	if m.Total != handoffmsg.ConnsMore && int(m.Total)-have > left.conns {
		return nil, total, fmt.Errorf("%w: a migration of %d connections, at most %d", ErrLimit, m.Total, have+left.conns)
	}
	items, err := takeItems(b, left)
	if err != nil {
		return nil, total, err
	}
	if m.Total != handoffmsg.ConnsMore {
		total = int(m.Total)
	}
	return items, total, nil
}

// takeItems checks the connections of a CONNS or LATE batch against what
// the migration may still bring, and takes their descriptors. On error it
// takes nothing.
func takeItems(b *unixmsg.Batch, left *budget) ([]incoming, error) {
	if b.Len() > left.conns {
		return nil, fmt.Errorf("%w: %d connections more than allowed", ErrLimit, b.Len()-left.conns)
	}
	var size int64
	for _, it := range b.Items() {
		size += int64(len(it.Payload))
	}
	if size > left.bytes {
		return nil, fmt.Errorf("%w: %d bytes of state and unread data more than allowed", ErrLimit, size-left.bytes)
	}
	items := make([]incoming, b.Len())
	prefault.Slice(items)
	for i, it := range b.Items() {
		network := it.Meta.Value(handoffmsg.MetaNetwork)
		if it.Kind != connKind(network) {
			return nil, handoffmsg.Errf(handoffmsg.ErrMalformed, "connection %d is a %s, labelled %q", i, it.Kind, network)
		}
		state, buffered, err := handoffmsg.ParseConnPayload(it.Payload)
		if err != nil {
			return nil, err
		}
		items[i] = incoming{kind: it.Kind, network: intern(network), state: state, buffered: buffered}
	}
	left.conns -= b.Len()
	left.bytes -= size
	for i := range items {
		// Checked above: every descriptor is there.
		items[i].fd, _ = b.TakeFDAt(i)
	}
	return items, nil
}
