//go:build linux

package graceful_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
)

// TestCompatFdKinds: FdListener, FdConn and FdPacketConn take ownership of
// their descriptor, convert the right kinds and refuse (closing the
// descriptor) the wrong ones.
func TestCompatFdKinds(t *testing.T) {
	compatCheckLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	to := map[string]func(int, graceful.Meta) (io.Closer, error){
		"listener": func(f int, m graceful.Meta) (io.Closer, error) { return graceful.FdListener(f, m) },
		"conn":     func(f int, m graceful.Meta) (io.Closer, error) { return graceful.FdConn(f, m) },
		"packet":   func(f int, m graceful.Meta) (io.Closer, error) { return graceful.FdPacketConn(f, m) },
	}
	from := map[string]any{"listener": ln, "conn": conn, "packet": pc}
	for fromName, v := range from {
		for toName, conv := range to {
			t.Run(fromName+"-to-"+toName, func(t *testing.T) {
				before := compatCount(t)
				d, err := fd.Dup(v)
				if err != nil {
					t.Fatal(err)
				}
				c, err := conv(d, graceful.Meta{Name: fromName})
				if fromName == toName {
					if err != nil {
						t.Fatal(err)
					}
					c.Close()
				} else if !errors.Is(err, graceful.ErrFdKind) {
					if c != nil {
						c.Close()
					}
					t.Fatalf("%v, want ErrFdKind", err)
				}
				if err := compatAwaitCount(before); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

// TestCompatStreamAndMeta: a server on a SOCK_STREAM unix listener is
// served the same way, and Meta arrives whole.
func TestCompatStreamAndMeta(t *testing.T) {
	compatCheckLeaks(t)
	sock := compatSockPath(t)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := graceful.Meta{
		Name:   "binary",
		Values: map[string]string{"b": "2", "a": "1"},
		Custom: map[string]any{"n": 42, "s": "str", "f": 1.5},
	}
	done := make(chan error, 1)
	go func() { done <- graceful.Serve(ln, graceful.FdHandler(int(f.Fd()), want)) }()
	var got []graceful.Meta
	err = graceful.Receive(sock, func(rfd int, m graceful.Meta) {
		got = append(got, m)
		same, err := fd.Same(rfd, int(f.Fd()))
		if err != nil || !same {
			t.Errorf("received descriptor is not the file sent: %v", err)
		}
		fd.Close(rfd)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(want) {
		t.Errorf("Meta: got %+v, want %+v", got, want)
	}
	ln.Close()
	if err := <-done; err != nil {
		t.Errorf("Serve after its listener was closed: %v", err)
	}
}

// TestCompatServerLifecycle: ListenAndServe replaces a stale socket file,
// refuses a live one, and Shutdown stops it; Serve returns nil.
func TestCompatServerLifecycle(t *testing.T) {
	compatCheckLeaks(t)
	sock := compatSockPath(t)
	// A stale socket file: its listener is gone, the file stays.
	stale, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()

	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := &graceful.Server{Handler: graceful.FileHandler(f, graceful.Meta{Name: "f"})}
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe(sock) }()

	// Once a client is served, the server is listening.
	var c graceful.Client
	c.Timeout = 30 * time.Second
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.Receive(sock, func(rfd int, _ graceful.Meta) { fd.Close(rfd) })
		if err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("ListenAndServe: %v", err)
		default:
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		// Nothing tells when ListenAndServe is listening: poll.
		time.Sleep(5 * time.Millisecond)
	}

	// A live socket is never stolen.
	if err := graceful.ListenAndServe(sock, graceful.FileHandler(f, graceful.Meta{})); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second ListenAndServe on a live socket: %v, want EADDRINUSE", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("ListenAndServe after Shutdown: %v", err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Shutdown: %v", err)
	}
	if err := s.Serve(nil); err != nil {
		t.Errorf("Serve after Shutdown: %v", err)
	}
	if err := graceful.ListenAndServe(sock, nil); !errors.Is(err, graceful.ErrNoHandler) {
		t.Errorf("ListenAndServe without a handler: %v", err)
	}
}

// TestCompatSendReceiveMsg: the original package's Send and ReceiveMsg
// work on connections that stay the caller's.
func TestCompatSendReceiveMsg(t *testing.T) {
	compatCheckLeaks(t)
	p, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, pfd := range p {
		f := os.NewFile(uintptr(pfd), "pair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
		defer c.Close()
	}
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for round := range 2 {
		sent := make(chan error, 1)
		go func() { sent <- graceful.Send(conns[0], int(f.Fd()), graceful.Meta{Name: fmt.Sprint("round", round)}) }()
		var names []string
		err := graceful.ReceiveMsg(conns[1], func(rfd int, m graceful.Meta) {
			names = append(names, m.Name)
			if same, err := fd.Same(rfd, int(f.Fd())); err != nil || !same {
				t.Errorf("received descriptor is not the file sent: %v", err)
			}
			fd.Close(rfd)
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
		if want := []string{fmt.Sprint("round", round)}; !slices.Equal(names, want) {
			t.Errorf("round %d: received %q, want %q", round, names, want)
		}
	}
}
