//go:build linux

package graceful_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/graceful/migrate"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/unixmsg"
	"golang.org/x/sys/unix"
)

// migrateOffer builds an OFFER batch that agrees to migration (and to
// streamed CONNS batches with stream): tcp as the listener, self as the
// handoff listener.
func migrateOffer(t *testing.T, self *net.UnixListener, tcp net.Listener, stream bool) *unixmsg.Batch {
	b := new(unixmsg.Batch)
	if err := b.Add("0", tcp, unixmsg.MetaOf("role", "listener", "network", "tcp", "addr", "127.0.0.1:0"), nil); err != nil {
		t.Error(err)
	}
	if err := b.Add("1", self, unixmsg.MetaOf("role", "handoff", "network", "unixpacket"), nil); err != nil {
		t.Error(err)
	}
	features := uint32(handoffmsg.FeatureMigrate)
	if stream {
		features |= handoffmsg.FeatureStreamConns
	}
	payload, _ := handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgOffer, Version: 1, Features: features, Items: 2, Generation: 7})
	b.SetPayload(payload)
	return b
}

// connPayload lays out a CONNS item's payload.
func connPayload(state, buffered string) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(state)))
	return append(append(b, state...), buffered...)
}

// TestMigrateHostilePredecessor: a predecessor that breaks the migration
// phase leaves the successor with an error and not one descriptor more.
func TestMigrateHostilePredecessor(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	client, err := net.Dial("tcp", tcp.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := tcp.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	conns := func(items, total uint32, add func(b *unixmsg.Batch)) *unixmsg.Batch {
		b := new(unixmsg.Batch)
		add(b)
		payload, _ := handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgConns, Items: items, Total: total})
		b.SetPayload(payload)
		return b
	}
	oneConn := func(payload []byte) func(b *unixmsg.Batch) {
		return func(b *unixmsg.Batch) {
			if err := b.Add("0", server, unixmsg.MetaOf("role", "conn", "network", "tcp"), payload); err != nil {
				t.Error(err)
			}
		}
	}
	one := func(total uint32) *unixmsg.Batch { return conns(1, total, oneConn(connPayload("s", ""))) }
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unixConn := os.NewFile(uintptr(sp[0]), "pair")
	defer unixConn.Close()
	defer unix.Close(sp[1])
	for _, tc := range []struct {
		name   string
		stream bool                    // the OFFER agrees to streamed CONNS
		phase  func() []*unixmsg.Batch // sent after READY; then the fake hangs up
		want   error
		opts   graceful.Options // the successor's bounds
	}{
		{"unix socket labelled tcp", false, func() []*unixmsg.Batch {
			return []*unixmsg.Batch{conns(1, 1, func(b *unixmsg.Batch) {
				b.Add("0", unixConn, unixmsg.MetaOf("role", "conn", "network", "tcp"), connPayload("s", ""))
			})}
		}, graceful.ErrMalformed, graceful.Options{}},
		{"http with unread bytes", false, func() []*unixmsg.Batch {
			return []*unixmsg.Batch{conns(1, 1, oneConn(connPayload("net/http", "GET / HTTP/1.1\r\nHost: x\r\n\r\n")))}
		}, graceful.ErrMalformed, graceful.Options{}},
		{"more connections than allowed", false, func() []*unixmsg.Batch { return []*unixmsg.Batch{one(2)} }, migrate.ErrLimit, graceful.Options{MaxMigrated: 1}},
		{"streamed, more than allowed", true, func() []*unixmsg.Batch {
			return []*unixmsg.Batch{one(handoffmsg.ConnsMore), one(handoffmsg.ConnsMore)}
		}, migrate.ErrLimit, graceful.Options{MaxMigrated: 1}},
		{"more bytes than allowed", false, func() []*unixmsg.Batch { return []*unixmsg.Batch{conns(1, 1, oneConn(connPayload("state", "bytes")))} }, migrate.ErrLimit, graceful.Options{MaxMigratedBytes: 8}},
		{"count", false, func() []*unixmsg.Batch { return []*unixmsg.Batch{conns(2, 2, oneConn(connPayload("s", "")))} }, graceful.ErrMalformed, graceful.Options{}},
		{"listener", false, func() []*unixmsg.Batch {
			return []*unixmsg.Batch{conns(1, 1, func(b *unixmsg.Batch) { b.Add("0", tcp, nil, connPayload("", "")) })}
		}, graceful.ErrMalformed, graceful.Options{}},
		{"payload", false, func() []*unixmsg.Batch { return []*unixmsg.Batch{conns(1, 1, oneConn([]byte{9, 0}))} }, graceful.ErrMalformed, graceful.Options{}},
		{"state length", false, func() []*unixmsg.Batch { return []*unixmsg.Batch{conns(1, 1, oneConn([]byte{9, 0, 0, 0, 'x'}))} }, graceful.ErrMalformed, graceful.Options{}},
		{"total changes", false, func() []*unixmsg.Batch {
			return []*unixmsg.Batch{conns(1, 3, oneConn(connPayload("", ""))), conns(1, 2, oneConn(connPayload("", "")))}
		}, graceful.ErrMalformed, graceful.Options{}},
		{"hang up midway", false, func() []*unixmsg.Batch { return []*unixmsg.Batch{conns(1, 2, oneConn(connPayload("s", "b")))} }, graceful.ErrHandoff, graceful.Options{}},
		{"no DONE", false, func() []*unixmsg.Batch { return []*unixmsg.Batch{conns(1, 1, oneConn(connPayload("s", "b")))} }, graceful.ErrHandoff, graceful.Options{}},
		{"more without streaming", false, func() []*unixmsg.Batch { return []*unixmsg.Batch{one(handoffmsg.ConnsMore)} }, graceful.ErrMalformed, graceful.Options{}},
		{"streamed, last short", true, func() []*unixmsg.Batch { return []*unixmsg.Batch{one(handoffmsg.ConnsMore), one(3)} }, graceful.ErrMalformed, graceful.Options{}},
		{"streamed, last over", true, func() []*unixmsg.Batch { return []*unixmsg.Batch{one(handoffmsg.ConnsMore), one(1)} }, graceful.ErrMalformed, graceful.Options{}},
		{"streamed, hang up midway", true, func() []*unixmsg.Batch { return []*unixmsg.Batch{one(handoffmsg.ConnsMore), one(handoffmsg.ConnsMore)} }, graceful.ErrHandoff, graceful.Options{}},
		{"streamed, no DONE", true, func() []*unixmsg.Batch { return []*unixmsg.Batch{one(handoffmsg.ConnsMore), one(2)} }, graceful.ErrHandoff, graceful.Options{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			restartCheckLeaks(t)
			phase := tc.phase()
			defer func() {
				for _, b := range phase {
					b.Close()
				}
			}()
			path := filepath.Join(t.TempDir(), "h.sock")
			done := fakePredecessor(t, path, func(c *unixmsg.Conn, self *net.UnixListener) error {
				offer := migrateOffer(t, self, tcp, tc.stream)
				defer offer.Close()
				if err := c.Send(offer); err != nil {
					return err
				}
				b, err := c.Receive()
				if err != nil {
					return err
				}
				m, _ := handoffmsg.Parse(b.Payload())
				b.Close()
				if m.Type != handoffmsg.MsgReady || m.Features&handoffmsg.FeatureMigrate == 0 {
					return fmt.Errorf("got %+v, want READY asking for migration", m)
				}
				if streams := m.Features&handoffmsg.FeatureStreamConns != 0; streams != tc.stream {
					t.Errorf("READY %+v asks for streamed batches: %v, want %v", m, streams, tc.stream)
				}
				for _, b := range phase {
					if err := c.Send(b); err != nil {
						return err
					}
				}
				if strings.HasSuffix(tc.name, "no DONE") {
					// ADOPTED, then hang up.
					b, err := c.Receive()
					if err != nil {
						return err
					}
					m, _ := handoffmsg.Parse(b.Payload())
					b.Close()
					if want := 1 + btoi(tc.stream); m.Type != handoffmsg.MsgAdopted || int(m.Items) != want {
						t.Errorf("got %+v, want ADOPTED of %d", m, want)
					}
				}
				return nil
			})
			opts := tc.opts
			opts.Path, opts.Timeout, opts.Migrate = path, 5*time.Second, true
			p, err := graceful.New(opts)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := p.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ln.Close()
			err = p.Ready()
			if !errors.Is(err, graceful.ErrHandoff) || !errors.Is(err, tc.want) {
				t.Errorf("Ready: %v, want %v", err, tc.want)
			}
			if tc.want == graceful.ErrHandoff && errors.Is(err, graceful.ErrMalformed) {
				t.Errorf("Ready: %v, want no ErrMalformed: the batches were well formed", err)
			}
			if cs, err := p.MigratedConns(); len(cs) != 0 || !errors.Is(err, graceful.ErrNotReady) {
				t.Errorf("%d connections adopted after a failed migration (%v)", len(cs), err)
			}
			p.Close()
			// A successor that refused a batch may have hung up on the
			// fake's next; one that got well-formed batches may not.
			if err := <-done; err != nil && tc.want == graceful.ErrHandoff {
				t.Errorf("fake predecessor: %v", err)
			}
		})
	}
	// The connection the fake offered is alive and untouched.
	io.WriteString(client, "ping\n")
	buf := make([]byte, 5)
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "ping\n" {
		t.Errorf("offered connection after the failures: %q, %v", buf, err)
	}
}

// TestMigrateHostileSuccessor: a successor that acknowledges the wrong
// number of connections, or hangs up in the middle of the phase, fails
// the handoff; the predecessor resumes every connection and keeps
// serving.
func TestMigrateHostileSuccessor(t *testing.T) {
	for _, tc := range []string{"wrong count", "hang up"} {
		t.Run(tc, func(t *testing.T) {
			restartCheckLeaks(t)
			path := filepath.Join(t.TempDir(), "h.sock")
			ls, ln := startLineServer(t, path, nil)
			var clients []*lineClient
			for i := range 5 {
				lc := dialLine(t, ln.Addr().String(), fmt.Sprintf("c%d", i))
				defer lc.c.Close()
				if _, err := lc.roundTrip(0); err != nil {
					t.Fatal(err)
				}
				clients = append(clients, lc)
			}
			io.WriteString(clients[0].c, "half-")

			c, err := unixmsg.Dial("unixpacket", path, &unixmsg.Options{NoAck: true})
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			send := func(m handoffmsg.Message) {
				var b unixmsg.Batch
				b.SetPayload(mustAppend(t, m))
				if err := c.Send(&b); err != nil {
					t.Fatal(err)
				}
			}
			send(handoffmsg.Message{Type: handoffmsg.MsgHello, MinVersion: 1, MaxVersion: 1, Features: handoffmsg.FeatureMigrate})
			offer, err := c.Receive()
			if err != nil {
				t.Fatal(err)
			}
			m, _ := handoffmsg.Parse(offer.Payload())
			offer.Close()
			if m.Features&handoffmsg.FeatureMigrate == 0 {
				t.Fatalf("OFFER %+v does not agree to migrate", m)
			}
			send(handoffmsg.Message{Type: handoffmsg.MsgReady, Features: handoffmsg.FeatureMigrate})
			b, err := c.Receive()
			if err != nil {
				t.Fatal(err)
			}
			m, _ = handoffmsg.Parse(b.Payload())
			if m.Type != handoffmsg.MsgConns || m.Total != uint32(len(clients)) || b.Len() != len(clients) {
				t.Errorf("got %+v with %d descriptors, want CONNS of %d", m, b.Len(), len(clients))
			}
			b.Close()
			if tc == "wrong count" {
				send(handoffmsg.Message{Type: handoffmsg.MsgAdopted, Items: m.Total - 1})
				r, err := c.Receive()
				if err == nil {
					m, _ = handoffmsg.Parse(r.Payload())
					r.Close()
				}
				if err != nil || m.Type != handoffmsg.MsgError {
					t.Errorf("after a wrong ADOPTED: %+v, %v; want ERROR", m, err)
				}
			}
			c.Close()
			// Rolled back: every session carries on with generation 1, the
			// half line included.
			io.WriteString(clients[0].c, "done\n")
			clients[0].count++
			if g, err := clients[0].check("half-done"); err != nil || g != 1 {
				t.Errorf("half line after the rollback: generation %d, %v", g, err)
			}
			for i, lc := range clients {
				if g, err := lc.roundTrip(1); err != nil || g != 1 {
					t.Errorf("client %d after the rollback: generation %d, %v", i, g, err)
				}
			}
			if ls.p.HandedOff() {
				t.Error("handed off to a successor that failed the migration")
			}
			for _, lc := range clients {
				lc.c.Close()
			}
			ln.Close()
			ls.wg.Wait()
			ls.p.Close()
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
