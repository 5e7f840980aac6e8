//go:build linux

package graceful_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/unixmsg"
)

// TestCompatHandlerError: a handler that fails sends no descriptor; the
// client process gets ErrHandlerFailed and no descriptor, the delivery
// callbacks do not run, and neither process leaks.
func TestCompatHandlerError(t *testing.T) {
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	closedLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedLn.Close()

	for _, tt := range []struct {
		name    string
		h       graceful.Handler
		message string
	}{
		{
			name: "errorf",
			h: graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
				w.Errorf("no descriptors today: %w", os.ErrPermission)
			}),
			message: "no descriptors today: permission denied",
		},
		{
			name:    "closed listener",
			h:       graceful.ListenerHandler(closedLn, graceful.Meta{Name: "gone"}),
			message: `add "gone"`,
		},
		{
			name:    "bad fd",
			h:       graceful.FdHandler(-1, graceful.Meta{Name: "bad"}),
			message: "bad file descriptor",
		},
		{
			name:    "duplicate name",
			h:       graceful.SequenceHandler(graceful.FileHandler(f, graceful.Meta{Name: "x"}), graceful.FileHandler(f, graceful.Meta{Name: "x"})),
			message: "duplicate item name",
		},
		{
			name:    "panic",
			h:       graceful.HandlerFunc(func(net.Conn, graceful.ResponseWriter) { panic("handler bug") }),
			message: "handler panicked: handler bug",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			compatCheckLeaks(t)
			called := make(chan struct{}, 1)
			h := graceful.SequenceHandler(
				graceful.FileHandler(f, graceful.Meta{Name: "first"}),
				tt.h,
				graceful.CallbackHandler(func() { called <- struct{}{} }),
			)
			logger, msgs := newCompatLog()
			sock, _ := compatServe(t, h, logger)
			client := compatStart(t, "client-expect-err", "SOCK="+sock, "WANT="+tt.message)
			client.mustExit()
			awaitLog(t, msgs, "graceful: handler failed")
			select {
			case <-called:
				t.Error("the delivery callback ran for a failed batch")
			default:
			}
		})
	}
}

func compatRoleClientExpectErr() error {
	base, err := fd.Count()
	if err != nil {
		return err
	}
	calls := 0
	err = graceful.Receive(os.Getenv("SOCK"), func(rfd int, _ graceful.Meta) {
		calls++
		fd.Close(rfd)
	})
	if !errors.Is(err, graceful.ErrHandlerFailed) || !strings.Contains(err.Error(), os.Getenv("WANT")) {
		return fmt.Errorf("Receive: %v; want ErrHandlerFailed with %q", err, os.Getenv("WANT"))
	}
	if calls != 0 {
		return fmt.Errorf("%d callbacks for a failed batch", calls)
	}
	return compatAwaitCount(base)
}

// TestCompatClientHangup: a client process that goes away before the
// batch is delivered (before reading anything, or after reading part of
// it without acknowledging) leaves the server process as it was: no leak,
// no delivery callback, and the next client is served.
func TestCompatClientHangup(t *testing.T) {
	for _, role := range []string{"hangup", "hangup-after-read"} {
		t.Run(role, func(t *testing.T) {
			compatCheckLeaks(t)
			tcp, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer tcp.Close()
			release := make(chan struct{})
			gate := graceful.HandlerFunc(func(net.Conn, graceful.ResponseWriter) { <-release })
			if role == "hangup-after-read" {
				close(release)
			}
			var called sync.Mutex
			calls := 0
			h := graceful.SequenceHandler(
				graceful.ListenerHandler(tcp, graceful.Meta{Name: "tcp"}),
				gate,
				graceful.CallbackHandler(func() { called.Lock(); calls++; called.Unlock() }),
			)
			logger, msgs := newCompatLog()
			sock, _ := compatServe(t, h, logger)

			child := compatStart(t, role, "SOCK="+sock)
			child.mustExit()
			if role == "hangup" {
				close(release)
			}
			awaitLog(t, msgs, "graceful: send descriptors")
			called.Lock()
			if calls != 0 {
				t.Errorf("delivery callback ran %d times for an undelivered batch", calls)
			}
			called.Unlock()

			// The next client is served.
			var names []string
			err = graceful.Receive(sock, func(rfd int, m graceful.Meta) {
				names = append(names, m.Name)
				fd.Close(rfd)
			})
			if err != nil || !slices.Equal(names, []string{"tcp"}) {
				t.Fatalf("Receive after the hangup: %v, %q", err, names)
			}
			called.Lock()
			if calls != 1 {
				t.Errorf("delivery callback ran %d times, want 1", calls)
			}
			called.Unlock()
		})
	}
}

func compatRoleHangup() error {
	c, err := net.Dial("unixpacket", os.Getenv("SOCK"))
	if err != nil {
		return err
	}
	return c.Close()
}

// compatRoleHangupAfterRead reads the first message of the batch, with
// whatever descriptors it carries, and goes without acknowledging.
func compatRoleHangupAfterRead() error {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: os.Getenv("SOCK"), Net: "unixpacket"})
	if err != nil {
		return err
	}
	buf, oob := make([]byte, 1<<16), make([]byte, 1<<12)
	if _, _, _, _, err := c.ReadMsgUnix(buf, oob); err != nil {
		return err
	}
	return c.Close()
}

// TestCompatCallbackPanic: a Receive callback that panics keeps what it
// was handed; Receive closes the rest.
func TestCompatCallbackPanic(t *testing.T) {
	compatCheckLeaks(t)
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var hs []graceful.Handler
	for i := range 5 {
		hs = append(hs, graceful.FileHandler(f, graceful.Meta{Name: fmt.Sprint("f", i)}))
	}
	sock, _ := compatServe(t, graceful.SequenceHandler(hs...), nil)

	before := compatCount(t)
	var handed []int
	func() {
		defer func() {
			if r := recover(); r != "callback bug" {
				t.Errorf("recovered %v", r)
			}
		}()
		graceful.Receive(sock, func(rfd int, m graceful.Meta) {
			handed = append(handed, rfd)
			if m.Name == "f1" {
				panic("callback bug")
			}
		})
		t.Error("Receive returned")
	}()
	if len(handed) != 2 {
		t.Fatalf("%d descriptors handed over, want 2", len(handed))
	}
	// The two handed over are the callback's; nothing else is left.
	if err := compatAwaitCount(before + 2); err != nil {
		t.Error(err)
	}
	for _, h := range handed {
		fd.Close(h)
	}
}

// TestCompatReceiveErrors: Receive from nothing, or from a peer that does
// not speak the protocol, fails without leaking.
func TestCompatReceiveErrors(t *testing.T) {
	compatCheckLeaks(t)
	sock := compatSockPath(t)
	if err := graceful.Receive(sock, func(int, graceful.Meta) { t.Error("callback") }); err == nil {
		t.Error("Receive with no server succeeded")
	}

	// A unixmsg peer that sends a batch with a descriptor but without the
	// handler protocol's tag.
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		uc, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		c, err := unixmsg.NewConn(uc, nil)
		if err != nil {
			uc.Close()
			return
		}
		defer c.Close()
		var b unixmsg.Batch
		defer b.Close()
		if b.Add("x", ln, nil, nil) == nil {
			c.Send(&b)
		}
	}()
	err = graceful.Receive(sock, func(int, graceful.Meta) { t.Error("callback") })
	if !errors.Is(err, graceful.ErrHandlerProtocol) {
		t.Errorf("Receive from a foreign peer: %v, want ErrHandlerProtocol", err)
	}
}
