package graceful

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/unixmsg"
)

// ReceiveCallback is called for each received descriptor, in order; fd is
// the callback's to keep or close.
type ReceiveCallback func(fd int, meta Meta)

// Client receives descriptors from a Server. The zero value is ready to
// use; a Client may be used by several goroutines at once.
type Client struct {
	// Timeout bounds a whole Receive. If zero, there is no bound.
	Timeout time.Duration

	// Options configure the unixmsg connection (limits, SkipVerify).
	Options *unixmsg.Options
}

// NewClient returns a Client; the buffer sizes have no effect.
func NewClient(msgn, oobn int) *Client { return &Client{} }

// Receive connects to the Server at the unix socket addr (a path or
// "@name"), receives its batch and, once the server's callbacks have run,
// calls cb for each descriptor. The batch arrives whole or not at all: on
// any error no callback is made and every descriptor received is closed
// (also those not yet handed to a cb that panics).
func Receive(addr string, cb ReceiveCallback) error {
	var c Client
	return c.ReceiveContext(context.Background(), addr, cb)
}

// ReceiveMsg receives one batch on conn (from Send or a Server) as
// Receive does, without waiting for the connection to end. conn stays the
// caller's.
func ReceiveMsg(conn *net.UnixConn, cb ReceiveCallback) error {
	var c Client
	return c.ReceiveMsg(conn, cb)
}

// ReceiveAll is Receive on conn, a connection to a Server, which stays the
// caller's.
func ReceiveAll(conn *net.UnixConn, cb ReceiveCallback) error {
	var c Client
	return c.ReceiveAll(conn, cb)
}

// Receive is the package's Receive with c's settings.
func (c *Client) Receive(addr string, cb ReceiveCallback) error {
	return c.ReceiveContext(context.Background(), addr, cb)
}

// ReceiveContext is Receive, interrupted when ctx ends.
func (c *Client) ReceiveContext(ctx context.Context, addr string, cb ReceiveCallback) error {
	ctx, cancel := c.context(ctx)
	defer cancel()
	uc, err := dialHandler(ctx, addr)
	if err != nil {
		return err
	}
	mc, err := unixmsg.NewConn(uc, c.Options)
	if err != nil {
		uc.Close()
		return err
	}
	defer mc.Close()
	return handlerReceiveBatch(ctx, mc, cb, true)
}

// ReceiveMsg is the package's ReceiveMsg with c's settings.
func (c *Client) ReceiveMsg(conn *net.UnixConn, cb ReceiveCallback) error {
	return c.receiveOn(conn, cb, false)
}

// ReceiveAll is the package's ReceiveAll with c's settings.
func (c *Client) ReceiveAll(conn *net.UnixConn, cb ReceiveCallback) error {
	return c.receiveOn(conn, cb, true)
}

func (c *Client) receiveOn(conn *net.UnixConn, cb ReceiveCallback, waitEnd bool) error {
	ctx, cancel := c.context(context.Background())
	defer cancel()
	mc, err := handlerDupConn(conn, c.Options)
	if err != nil {
		return err
	}
	defer mc.Close()
	return handlerReceiveBatch(ctx, mc, cb, waitEnd)
}

func (c *Client) context(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.Timeout > 0 {
		return context.WithTimeout(ctx, c.Timeout)
	}
	return context.WithCancel(ctx)
}

// Send sends a duplicate of fd on conn and waits for the receiver's
// (ReceiveMsg) acknowledgement. fd and conn stay the caller's.
func Send(conn *net.UnixConn, fd int, meta Meta) error {
	name, um, payload, err := meta.encode()
	if err != nil {
		return err
	}
	var b unixmsg.Batch
	defer b.Close()
	if err := b.AddFD(name, fd, um, payload); err != nil {
		return err
	}
	b.SetPayload([]byte(handlerOK))
	mc, err := handlerDupConn(conn, nil)
	if err != nil {
		return err
	}
	defer mc.Close()
	return mc.Send(&b)
}

// handlerDupConn returns a unixmsg.Conn on a duplicate of conn.
func handlerDupConn(conn *net.UnixConn, opts *unixmsg.Options) (*unixmsg.Conn, error) {
	f, err := fd.DupFile(conn, "graceful")
	if err != nil {
		return nil, err
	}
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("graceful: %T is not a unix connection", nc)
	}
	mc, err := unixmsg.NewConn(uc, opts)
	if err != nil {
		uc.Close()
		return nil, err
	}
	return mc, nil
}

// dialHandler connects to a handler server at addr: SOCK_SEQPACKET first,
// SOCK_STREAM for a server listening on one.
func dialHandler(ctx context.Context, addr string) (*net.UnixConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", addr)
	if err != nil && handlerProtoMismatch(err) {
		c, err = d.DialContext(ctx, "unix", addr)
	}
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}

// handlerReceiveBatch receives a handler batch on mc and hands its descriptors to
// cb; with waitEnd, only after the server has closed the connection.
func handlerReceiveBatch(ctx context.Context, mc *unixmsg.Conn, cb ReceiveCallback, waitEnd bool) error {
	b, err := mc.ReceiveContext(ctx)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("graceful: the server closed the connection without sending a batch: %w", io.ErrUnexpectedEOF)
		}
		return err
	}
	defer b.Close()
	p := string(b.Payload())
	switch {
	case p == handlerOK:
	case strings.HasPrefix(p, handlerFail):
		return fmt.Errorf("%w: %s", ErrHandlerFailed, p[len(handlerFail):])
	default:
		return fmt.Errorf("%w: batch of %d descriptors without the handler protocol's tag", ErrHandlerProtocol, b.Len())
	}
	if waitEnd {
		extra, err := mc.ReceiveContext(ctx)
		if err == nil {
			extra.Close()
			return fmt.Errorf("%w: a second batch", ErrHandlerProtocol)
		}
		if !errors.Is(err, io.EOF) {
			return fmt.Errorf("graceful: waiting for the server to finish: %w", err)
		}
	}
	// Only now, the batch accepted whole, is anything decoded with gob
	// (see Meta.Custom).
	metas := make([]Meta, b.Len())
	for i, it := range b.Items() {
		if metas[i], err = handlerMetaOf(it); err != nil {
			return err
		}
	}
	for i := range metas {
		f, err := b.TakeFDAt(i)
		if err != nil {
			return err
		}
		cb(f, metas[i])
	}
	return nil
}
