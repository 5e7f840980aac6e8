package unixmsg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/internal/fdtable"
	"github.com/fdpass/fdpass/unixmsg/wire"
	"golang.org/x/sys/unix"
)

// Options configure a Conn. The zero value means defaults.
type Options struct {
	// Limits bound what the Conn accepts and sends. Zero fields mean
	// defaults; see DefaultLimits.
	Limits Limits
	// SendLimits, if any field is set, bound what the Conn sends instead
	// of Limits (zero fields: the defaults): for a Conn that accepts
	// less than it sends, such as one that only ever receives control
	// messages.
	SendLimits Limits
	// SkipVerify turns off the check, on receipt, that every descriptor is
	// of the kind its sender declared. Only turn it off for a peer you trust.
	SkipVerify bool
	// NoAck makes Send return once the batch is written, without asking the
	// receiver to acknowledge it. By default Send waits for the receiver's
	// verdict, so that a nil error means the batch was received whole.
	NoAck bool
}

// Limits bound what a Conn accepts and sends (see wire.Limits for the
// fields). A zero field means its default.
type Limits = wire.Limits

// DefaultLimits returns the limits used for zero fields.
func DefaultLimits() Limits { return wire.DefaultLimits() }

// Conn sends and receives batches over one connected unix socket of type
// SOCK_SEQPACKET (preferred), SOCK_STREAM or SOCK_DGRAM.
//
// A Conn may Send and Receive from different goroutines, but batches on
// one Conn take turns: while a Send waits for its acknowledgement the
// peer must not be sending a batch of its own.
//
// After an error that leaves the connection in an unknown state (a broken
// frame, a failed write, a cancellation in the middle of a batch) every
// later call returns an error matching ErrBroken. A receive timeout or
// cancellation between batches, and a batch refused whole (wrong kind,
// duplicate name), leave the Conn usable.
type Conn struct {
	uc       *net.UnixConn
	rc       syscall.RawConn
	opts     Options
	lim      Limits // what the Conn accepts
	slim     Limits // what it sends
	messages bool

	rmu      sync.Mutex
	dec      *wire.Decoder
	rbuf     []byte
	oob      []byte
	reserved bool // the descriptor table was sized for the batch in progress

	wmu     sync.Mutex
	scratch []byte // EncodeBatch's buffer, kept from batch to batch

	emu    sync.Mutex
	broken error

	// dmu guards the deadlines set through the Conn, which a cancelled
	// context must not clobber.
	dmu      sync.Mutex
	rdl, wdl time.Time
}

// NewConn returns a Conn that sends and receives on uc, which must be a
// connected unix socket. The Conn takes ownership of uc: closing the Conn
// closes uc. opts may be nil.
func NewConn(uc *net.UnixConn, opts *Options) (*Conn, error) {
	c := &Conn{uc: uc}
	if opts != nil {
		c.opts = *opts
	}
	c.lim = c.opts.Limits.WithDefaults()
	c.slim = c.lim
	if c.opts.SendLimits != (Limits{}) {
		c.slim = c.opts.SendLimits.WithDefaults()
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	c.rc = rc
	typ, err := socketType(rc)
	if err != nil {
		return nil, err
	}
	c.messages = typ != syscall.SOCK_STREAM
	c.dec = wire.NewDecoder(c.lim, c.messages)
	if c.messages {
		c.rbuf = make([]byte, wire.HeaderLen+c.lim.MaxFrame)
	} else {
		c.rbuf = make([]byte, 64<<10)
	}
	// Room for one SCM_RIGHTS message of MaxFDsPerMessage descriptors and
	// no more: any room beyond it would let the kernel deliver more
	// descriptors than that without setting MSG_CTRUNC.
	// With no room at all, the kernel closes any descriptor that comes.
	if c.lim.MaxFDsPerMessage > 0 {
		c.oob = make([]byte, unix.CmsgSpace(4*c.lim.MaxFDsPerMessage))
	}
	return c, nil
}

// Pair returns two Conns connected to each other by a SOCK_SEQPACKET
// socketpair. opts may be nil. It is the channel between a parent and the
// child it starts: the child gets one end's UnixConn().File() (exec.Cmd's
// ExtraFiles) and wraps it with NewConn; or between two goroutines.
func Pair(opts *Options) (*Conn, *Conn, error) {
	a, b, err := socketPair()
	if err != nil {
		return nil, nil, err
	}
	ca, err := NewConn(a, opts)
	if err != nil {
		a.Close()
		b.Close()
		return nil, nil, err
	}
	cb, err := NewConn(b, opts)
	if err != nil {
		ca.Close()
		b.Close()
		return nil, nil, err
	}
	return ca, cb, nil
}

// UnixConn returns the underlying connection, for deadlines and peer
// credentials. Reading or writing it directly breaks the protocol.
func (c *Conn) UnixConn() *net.UnixConn { return c.uc }

// SetDeadline sets the read and write deadlines of the connection; Send and
// Receive fail with os.ErrDeadlineExceeded past it. Set deadlines here,
// not on UnixConn(): a cancelled context restores these.
func (c *Conn) SetDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.rdl, c.wdl = t, t
	return c.uc.SetDeadline(t)
}

// SetReadDeadline sets the read deadline (see SetDeadline).
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.rdl = t
	return c.uc.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline (see SetDeadline).
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.wdl = t
	return c.uc.SetWriteDeadline(t)
}

// Close closes the connection and every descriptor received on it that was
// not yet returned in a batch.
func (c *Conn) Close() error {
	err := c.uc.Close()
	c.setBroken(net.ErrClosed)
	c.rmu.Lock()
	fd.CloseAll(c.dec.Drain())
	c.rmu.Unlock()
	return err
}

func (c *Conn) brokenErr() error {
	c.emu.Lock()
	defer c.emu.Unlock()
	if c.broken == nil {
		return nil
	}
	if errors.Is(c.broken, net.ErrClosed) {
		return net.ErrClosed
	}
	return fmt.Errorf("%w: %w", ErrBroken, c.broken)
}

func (c *Conn) setBroken(err error) {
	c.emu.Lock()
	if c.broken == nil {
		c.broken = err
	}
	c.emu.Unlock()
}

// Send sends b whole and, unless Options.NoAck is set, waits for the
// receiver to acknowledge it. b keeps its descriptors: sending never closes
// them, and the caller closes b when done (a batch may be sent again).
func (c *Conn) Send(b *Batch) error { return c.SendContext(context.Background(), b) }

// SendContext is Send with a context; cancelling it interrupts the send.
func (c *Conn) SendContext(ctx context.Context, b *Batch) error {
	return c.send(ctx, b, !c.opts.NoAck)
}

// SendNoAck sends b whole without asking for an acknowledgement, whatever
// Options.NoAck says: it returns once b is written, and the caller may
// close b then (the kernel holds what is in flight). Use it to stream
// batches whose fate the application learns otherwise, such as from a
// reply to the last one. A batch the receiver refuses once it has it whole
// (a descriptor of another kind than declared) is reported by the
// receiver's Receive only; one that breaks the stream (malformed, over a
// limit) ends the connection, and the ACK in which the receiver says why
// comes to the sender's next Send or Receive, whichever batch it is about.
func (c *Conn) SendNoAck(ctx context.Context, b *Batch) error {
	return c.send(ctx, b, false)
}

func (c *Conn) send(ctx context.Context, b *Batch, ack bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.brokenErr(); err != nil {
		return err
	}
	fds, err := b.sendable()
	if err != nil {
		return err
	}
	var flags uint32
	if ack {
		flags = wire.HeadFlagAck
	}
	var frames []wire.Frame
	c.scratch, frames, err = wire.EncodeBatch(c.scratch[:0], b.wireItems(&c.slim), b.payload, flags, c.slim)
	if err != nil {
		return fmt.Errorf("unixmsg: send: %w", err)
	}
	if cap(c.scratch) > 64<<20 {
		// Keep what a usual batch needs, not the largest one ever sent.
		defer func() { c.scratch = nil }()
	}
	stop := c.watch(ctx)
	for _, f := range frames {
		if err = c.writeFrame(f.Header, f.Body, fds[:f.NFDs]); err != nil {
			break
		}
		fds = fds[f.NFDs:]
	}
	if cerr := stop(); cerr != nil && err != nil {
		err = cerr
	}
	if err != nil {
		c.setBroken(err)
		return &net.OpError{Op: "send", Net: "unix", Addr: c.uc.RemoteAddr(), Err: err}
	}
	if !ack {
		return nil
	}
	return c.awaitAck(ctx)
}

func (c *Conn) awaitAck(ctx context.Context) error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	m, err := c.next(ctx)
	if err != nil {
		return err
	}
	if m.Ack == nil {
		fd.CloseAll(m.FDs)
		err := errf(ErrMalformed, "peer sent a batch while an acknowledgement was due")
		c.setBroken(err)
		return err
	}
	if m.Ack.Status != wire.StatusOK {
		return &RejectedError{Status: m.Ack.Status, Reason: m.Ack.Reason}
	}
	return nil
}

// Receive receives one batch whole, or returns an error and leaves the
// process's descriptors as they were. The batch and its descriptors are
// the caller's: take what is wanted, then Close the batch to close the
// rest. Unless Options.SkipVerify is set, every descriptor is checked
// against its declared kind. At a clean end of the connection, Receive
// returns io.EOF.
func (c *Conn) Receive() (*Batch, error) { return c.ReceiveContext(context.Background()) }

// ReceiveContext is Receive with a context; cancelling it interrupts the
// receive.
func (c *Conn) ReceiveContext(ctx context.Context) (*Batch, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	m, err := c.next(ctx)
	if err != nil {
		return nil, err
	}
	if m.Ack != nil {
		err := errf(ErrMalformed, "peer sent an acknowledgement while a batch was due")
		c.setBroken(err)
		c.reject(err)
		return nil, err
	}
	b := &Batch{items: m.Items, fds: m.FDs, payload: m.Payload}
	b.takeFileNames()
	if c.opts.SkipVerify {
		// Nothing to check.
	} else if err := b.verify(); err != nil {
		b.Close()
		if m.Flags&wire.HeadFlagAck != 0 {
			c.reject(err)
		}
		return nil, err
	}
	if m.Flags&wire.HeadFlagAck != 0 {
		if err := c.sendAck(ctx, wire.Ack{Status: wire.StatusOK}); err != nil {
			b.Close()
			c.setBroken(err)
			return nil, &net.OpError{Op: "ack", Net: "unix", Addr: c.uc.RemoteAddr(), Err: err}
		}
	}
	return b, nil
}

// next reads until the decoder yields a message. Called with rmu held.
func (c *Conn) next(ctx context.Context) (wire.Message, error) {
	if err := c.brokenErr(); err != nil {
		return wire.Message{}, err
	}
	if m, ok := c.dec.Next(); ok {
		return m, nil
	}
	stop := c.watch(ctx)
	for {
		n, fds, eof, err := c.recvOnce()
		if err == nil && !eof {
			err = c.dec.Feed(c.rbuf[:n], fds)
			if err == nil {
				if m, ok := c.dec.Next(); ok {
					// A cancellation that raced with the last read is
					// moot: the message is whole.
					stop()
					c.reserved = false
					return m, nil
				}
				if k := c.dec.Expecting(); k >= fdtable.Min && !c.reserved {
					// Many descriptors to come: make room for them all
					// at once (see package fdtable).
					c.reserved = true
					c.reserveFDs(k)
				}
				continue
			}
			// A broken frame: tell the peer why, then give up.
			fd.CloseAll(c.dec.Drain())
			c.setBroken(err)
			c.reject(err)
			stop()
			return wire.Message{}, err
		}
		cerr := stop()
		if cerr != nil {
			err = cerr
		}
		if err != nil && c.dec.Idle() && isTimeout(err) {
			// Nothing of a batch has arrived: the Conn stays usable.
			return wire.Message{}, &net.OpError{Op: "receive", Net: "unix", Addr: c.uc.RemoteAddr(), Err: err}
		}
		if err == nil && eof {
			if c.dec.Idle() {
				c.setBroken(io.EOF)
				return wire.Message{}, io.EOF
			}
			err = ErrUnexpectedEOF
		}
		fd.CloseAll(c.dec.Drain())
		c.setBroken(err)
		if errors.Is(err, ErrControlTruncated) || errors.Is(err, ErrTruncated) || errors.Is(err, ErrUnexpectedControl) || errors.Is(err, ErrMalformed) {
			c.reject(err)
			return wire.Message{}, err
		}
		if errors.Is(err, ErrUnexpectedEOF) {
			return wire.Message{}, err
		}
		return wire.Message{}, &net.OpError{Op: "receive", Net: "unix", Addr: c.uc.RemoteAddr(), Err: err}
	}
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// reject tells the peer, as far as it is listening, why its batch failed.
// It never blocks.
func (c *Conn) reject(err error) {
	c.tryWrite(ackFrame(wire.Ack{Status: statusOf(err), Reason: err.Error()}))
}

func statusOf(err error) wire.Status {
	switch {
	case errors.Is(err, ErrKindMismatch):
		return wire.StatusKind
	case errors.Is(err, ErrLimit):
		return wire.StatusLimit
	case errors.Is(err, ErrMissingFDs), errors.Is(err, ErrUnexpectedFDs), errors.Is(err, ErrControlTruncated):
		return wire.StatusDescriptor
	case errors.Is(err, ErrMalformed), errors.Is(err, ErrBadMagic), errors.Is(err, ErrVersion), errors.Is(err, ErrTruncated), errors.Is(err, ErrUnexpectedControl), errors.Is(err, ErrDuplicateName):
		return wire.StatusMalformed
	}
	return wire.StatusFailed
}

func (c *Conn) sendAck(ctx context.Context, a wire.Ack) error {
	frame := ackFrame(a)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	stop := c.watch(ctx)
	err := c.writeFrame(frame, nil, nil)
	if cerr := stop(); cerr != nil && err != nil {
		err = cerr
	}
	return err
}

func ackFrame(a wire.Ack) []byte {
	body := wire.AppendAck(nil, a)
	frame := wire.AppendHeader(make([]byte, 0, wire.HeaderLen+len(body)), wire.Header{Type: wire.FrameAck, Length: uint32(len(body))})
	return append(frame, body...)
}

var aLongTimeAgo = time.Unix(1, 0)

// watch makes a cancellation of ctx interrupt blocked I/O on the Conn. The
// returned function stops watching and returns ctx's error if it fired.
func (c *Conn) watch(ctx context.Context) func() error {
	if ctx.Done() == nil {
		return func() error { return nil }
	}
	stop := context.AfterFunc(ctx, func() {
		c.dmu.Lock()
		c.uc.SetDeadline(aLongTimeAgo)
		c.dmu.Unlock()
	})
	return func() error {
		if stop() {
			return nil
		}
		// Put back the deadlines the caller set.
		c.dmu.Lock()
		c.uc.SetReadDeadline(c.rdl)
		c.uc.SetWriteDeadline(c.wdl)
		c.dmu.Unlock()
		return ctx.Err()
	}
}
