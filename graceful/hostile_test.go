//go:build linux

package graceful_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/unixmsg"
)

// TestRestartHostileSuccessor: a peer that speaks the wrong version or
// garbage gets an ERROR, and the predecessor keeps serving.
func TestRestartHostileSuccessor(t *testing.T) {
	restartCheckLeaks(t)
	path := filepath.Join(t.TempDir(), "h.sock")
	p, ln := readyGeneration(t, graceful.Options{Path: path, Timeout: 5 * time.Second})
	// The Process duplicates its descriptors before it answers the first
	// peer: let it, before counting.
	exchange(t, path, []byte("hello"))
	for _, tc := range []struct {
		name    string
		payload []byte
		want    error
	}{
		{"version", mustAppend(t, handoffmsg.Message{Type: handoffmsg.MsgHello, MinVersion: 2, MaxVersion: 3}), graceful.ErrVersion},
		{"garbage", []byte("GET / HTTP/1.0\r\n\r\n"), graceful.ErrMalformed},
		{"ready first", mustAppend(t, handoffmsg.Message{Type: handoffmsg.MsgReady}), graceful.ErrMalformed},
		{"unknown type", append([]byte("FDHO\x01\x0a\x00\x00"), nil...), graceful.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := mustCount(t)
			m := exchange(t, path, tc.payload)
			herr := m.Err()
			if m.Type != handoffmsg.MsgError || !errors.Is(herr, tc.want) {
				t.Errorf("answer %+v, want an ERROR matching %v", m, tc.want)
			}
			if err := awaitFDCount(before); err != nil {
				t.Error(err)
			}
		})
	}
	if p.HandedOff() {
		t.Fatal("handed off to a hostile peer")
	}
	// Still serving handoffs.
	_, ln2 := readyGeneration(t, graceful.Options{Path: path})
	<-p.Exit()
	if ln2.Addr().String() != ln.Addr().String() {
		t.Errorf("successor listens on %s, want %s", ln2.Addr(), ln.Addr())
	}
}

// exchange sends payload as a successor's first message and returns the
// answer, which must carry no descriptor.
func exchange(t *testing.T, path string, payload []byte) handoffmsg.Message {
	t.Helper()
	c, err := unixmsg.Dial("unixpacket", path, &unixmsg.Options{NoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var b unixmsg.Batch
	b.SetPayload(payload)
	if err := c.Send(&b); err != nil {
		t.Fatal(err)
	}
	r, err := c.Receive()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Len() != 0 {
		t.Errorf("got %d descriptors", r.Len())
	}
	m, err := handoffmsg.Parse(r.Payload())
	if err != nil {
		t.Fatal(err)
	}
	// The predecessor hangs up after its answer, and only then are the
	// descriptor counts of this process settled.
	if b, err := c.Receive(); !errors.Is(err, io.EOF) {
		if err == nil {
			b.Close()
		}
		t.Errorf("after the answer: %v, want EOF", err)
	}
	return m
}

func mustAppend(t testing.TB, m handoffmsg.Message) []byte {
	t.Helper()
	b, err := handoffmsg.Append(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustCount(t testing.TB) int {
	t.Helper()
	n, err := fd.Count()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// fakePredecessor listens on path like a predecessor, reads the HELLO of
// one successor, and lets act answer it.
func fakePredecessor(t *testing.T, path string, act func(c *unixmsg.Conn, self *net.UnixListener) error) chan error {
	t.Helper()
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	done := make(chan error, 1)
	go func() {
		defer l.Close()
		uc, err := l.AcceptUnix()
		if err != nil {
			done <- err
			return
		}
		c, err := unixmsg.NewConn(uc, nil)
		if err != nil {
			uc.Close()
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		b, err := c.Receive()
		if err != nil {
			done <- err
			return
		}
		b.Close()
		done <- act(c, l)
	}()
	return done
}

// offerBatch builds an OFFER batch: a TCP listener, and self as the
// handoff listener unless told otherwise.
func offerBatch(t *testing.T, self *net.UnixListener, items uint32, version uint16, handoff bool, tcp net.Listener) *unixmsg.Batch {
	b := new(unixmsg.Batch)
	if err := b.Add("0", tcp, unixmsg.MetaOf("role", "listener", "network", "tcp", "addr", "127.0.0.1:0"), nil); err != nil {
		t.Error(err)
	}
	if handoff {
		if err := b.Add("1", self, unixmsg.MetaOf("role", "handoff", "network", "unixpacket"), nil); err != nil {
			t.Error(err)
		}
	}
	payload, _ := handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgOffer, Version: version, Items: items, Generation: 7})
	b.SetPayload(payload)
	return b
}

// TestRestartHostilePredecessor: a predecessor that refuses, lies about its
// batch or stops answering leaves the successor with an error and not one
// descriptor more.
func TestRestartHostilePredecessor(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	send := func(b *unixmsg.Batch) func(*unixmsg.Conn, *net.UnixListener) error {
		return func(c *unixmsg.Conn, _ *net.UnixListener) error { defer b.Close(); return c.Send(b) }
	}
	for _, tc := range []struct {
		name string
		act  func(c *unixmsg.Conn, self *net.UnixListener) error
		want error
	}{
		{"error", func(c *unixmsg.Conn, _ *net.UnixListener) error {
			p, _ := handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgError, Code: handoffmsg.CodeUnauthorized, Reason: "go away"})
			var b unixmsg.Batch
			b.SetPayload(p)
			return c.Send(&b)
		}, graceful.ErrUnauthorized},
		{"garbage", func(c *unixmsg.Conn, _ *net.UnixListener) error {
			var b unixmsg.Batch
			b.SetPayload([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
			return c.Send(&b)
		}, graceful.ErrAlreadyRunning},
		{"count", func(c *unixmsg.Conn, self *net.UnixListener) error {
			return send(offerBatch(t, self, 5, 1, true, tcp))(c, self)
		}, graceful.ErrMalformed},
		{"no handoff listener", func(c *unixmsg.Conn, self *net.UnixListener) error {
			return send(offerBatch(t, self, 1, 1, false, tcp))(c, self)
		}, graceful.ErrMalformed},
		{"version", func(c *unixmsg.Conn, self *net.UnixListener) error {
			return send(offerBatch(t, self, 2, 2, true, tcp))(c, self)
		}, graceful.ErrVersion},
		{"no DONE", func(c *unixmsg.Conn, self *net.UnixListener) error {
			if err := send(offerBatch(t, self, 2, 1, true, tcp))(c, self); err != nil {
				return err
			}
			b, err := c.Receive() // READY
			if err != nil {
				return err
			}
			b.Close()
			return nil // and hang up
		}, graceful.ErrHandoff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			restartCheckLeaks(t)
			path := filepath.Join(t.TempDir(), "h.sock")
			done := fakePredecessor(t, path, tc.act)
			p, err := graceful.New(graceful.Options{Path: path, Timeout: 5 * time.Second})
			if err == nil {
				var ln net.Listener
				ln, err = p.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				if socketID(ln) != socketID(tcp) {
					t.Error("listener not inherited")
				}
				ln.Close()
				err = p.Ready()
				p.Close()
				if _, serr := os.Stat(path); serr != nil {
					t.Errorf("a failed successor removed the socket file: %v", serr)
				}
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
			if err := <-done; err != nil && tc.want != graceful.ErrMalformed && tc.want != graceful.ErrVersion {
				t.Logf("fake predecessor: %v", err)
			}
		})
	}
}

// chanHandler is a slog.Handler that sends each record's message and
// attributes as a line.
type chanHandler chan string

func (h chanHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h chanHandler) Handle(_ context.Context, r slog.Record) error {
	var sb strings.Builder
	sb.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&sb, " %s=%v", a.Key, a.Value)
		return true
	})
	select {
	case h <- sb.String():
	default:
	}
	return nil
}

func (h chanHandler) WithAttrs([]slog.Attr) slog.Handler { return h }

func (h chanHandler) WithGroup(string) slog.Handler { return h }

func awaitLine(t testing.TB, lines chan string, substr string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l := <-lines:
			if strings.Contains(l, substr) {
				return l
			}
		case <-timeout:
			t.Fatalf("no log line containing %q", substr)
		}
	}
}
