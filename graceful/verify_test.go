//go:build linux

package graceful_test

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg"
	"github.com/vishvananda/netns"
)

// offerListener is a fake predecessor's act: it offers ln labelled with
// meta, and itself as the handoff listener, then waits for READY and
// says DONE.
func offerListener(ln net.Listener, meta unixmsg.Meta) func(*unixmsg.Conn, *net.UnixListener) error {
	return func(c *unixmsg.Conn, self *net.UnixListener) error {
		b := new(unixmsg.Batch)
		defer b.Close()
		if err := b.Add("0", ln, meta, nil); err != nil {
			return err
		}
		if err := b.Add("1", self, unixmsg.MetaOf("role", "handoff", "network", "unixpacket"), nil); err != nil {
			return err
		}
		payload, _ := handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgOffer, Version: 1, Items: 2, Generation: 1})
		b.SetPayload(payload)
		if err := c.Send(b); err != nil {
			return err
		}
		r, err := c.Receive() // READY
		if err != nil {
			return err
		}
		r.Close()
		return handoffmsg.Send(c, handoffmsg.Message{Type: handoffmsg.MsgDone})
	}
}

// TestOfferChecked: a successor adopts an inherited listener only if the
// socket is what its label says: bound to the address, in the network
// namespace asked for. Otherwise it leaves it, says so, and Listen
// creates one.
func TestOfferChecked(t *testing.T) {
	type offered struct {
		ln   net.Listener
		meta unixmsg.Meta
		addr string // what the successor asks for
	}
	cases := []struct {
		name string
		make func(t *testing.T) offered
	}{
		{"wildcard labelled loopback", func(t *testing.T) offered {
			ln, err := net.Listen("tcp", "0.0.0.0:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := "127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
			return offered{ln, unixmsg.MetaOf("role", "listener", "network", "tcp", "addr", addr), addr}
		}},
		{"another port", func(t *testing.T) offered {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			other, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := other.Addr().String()
			other.Close()
			return offered{ln, unixmsg.MetaOf("role", "listener", "network", "tcp", "addr", addr), addr}
		}},
		{"another network namespace, unlabelled", func(t *testing.T) offered {
			if os.Geteuid() != 0 {
				t.Skip("needs root to create a network namespace")
			}
			ip, err := exec.LookPath("ip")
			if err != nil {
				t.Skip("needs ip from iproute2")
			}
			name := fmt.Sprintf("fdpass-offer-%d", os.Getpid())
			if out, err := exec.Command(ip, "netns", "add", name).CombinedOutput(); err != nil {
				t.Fatalf("ip netns add: %v: %s", err, out)
			}
			t.Cleanup(func() { exec.Command(ip, "netns", "del", name).Run() })
			h, err := netns.GetFromName(name)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			ln, err := kinds.ListenInNetNS(h, "tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			return offered{ln, unixmsg.MetaOf("role", "listener", "network", "tcp", "addr", addr), addr}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			restartCheckLeaks(t)
			o := tc.make(t)
			defer o.ln.Close()
			path := filepath.Join(t.TempDir(), "h.sock")
			done := fakePredecessor(t, path, offerListener(o.ln, o.meta))
			logs := make(chan string, 100)
			p, err := graceful.New(graceful.Options{Path: path, Timeout: 5 * time.Second, Logger: slog.New(chanHandler(logs))})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			ln, err := p.Listen("tcp", o.addr)
			if err == nil {
				if socketID(ln) == socketID(o.ln) {
					t.Errorf("adopted a socket bound to %s in the wrong place, labelled %q", o.ln.Addr(), o.meta.Value("addr"))
				}
				ln.Close()
			}
			awaitLine(t, logs, "does not match its label")
			if err := p.Ready(); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Errorf("fake predecessor: %v", err)
			}
		})
	}
}
