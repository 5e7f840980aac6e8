//go:build linux

package graceful_test

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fdpass/fdpass/graceful"
)

// A hijacked connection, such as a WebSocket, is its handler's: it does not
// migrate, HTTPServer.Drain waits for the handler to return, and the
// handler learns of the takeover from Process.Exit. wsEcho is written the
// way the package recommends: at the takeover it finishes the exchange in
// hand and closes with 1001 (going away), at the next point its protocol
// allows: after the reply to the message being handled, or, for a
// connection that stays idle for wsIdleGrace, then. The client reconnects,
// to the successor.

const wsIdleGrace = 500 * time.Millisecond

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// wsEcho answers each text message m with "gen=N m".
func wsEcho(p *graceful.Process, gen uint64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Sec-WebSocket-Key")
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || key == "" {
			http.Error(w, "not a WebSocket handshake", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		defer say("ws-closed gen=%d", gen)
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", wsAccept(key))
		if brw.Flush() != nil {
			return
		}
		var exiting atomic.Bool
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-p.Exit():
				// An idle connection is closed if it stays idle.
				exiting.Store(true)
				c.SetReadDeadline(time.Now().Add(wsIdleGrace))
			case <-done:
			}
		}()
		closeFrame := wsFrame(nil, 8, binary.BigEndian.AppendUint16(nil, 1001), false)
		goingAway := func(reply []byte) {
			// The Close right behind the reply, in one write: the
			// client has both before it sends again.
			c.Write(append(reply, closeFrame...))
			// The client answers Close; wait for it a little.
			c.SetReadDeadline(time.Now().Add(time.Second))
			for {
				if op, _, err := wsRead(brw.Reader); err != nil || op == 8 {
					return
				}
			}
		}
		for {
			op, msg, err := wsRead(brw.Reader)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) && exiting.Load() {
					goingAway(nil)
				}
				return
			}
			if op == 8 {
				wsWrite(c, 8, nil, false)
				return
			}
			reply := wsFrame(nil, 1, fmt.Appendf(nil, "gen=%d %s", gen, msg), false)
			if exiting.Load() {
				goingAway(reply)
				return
			}
			if _, err := c.Write(reply); err != nil {
				return
			}
		}
	})
}

// wsWrite writes one final frame of opcode op; a client masks it.
func wsWrite(w io.Writer, op byte, payload []byte, mask bool) error {
	_, err := w.Write(wsFrame(nil, op, payload, mask))
	return err
}

// wsFrame appends a final frame of opcode op to b.
func wsFrame(b []byte, op byte, payload []byte, mask bool) []byte {
	b = append(b, 0x80|op)
	var m byte
	if mask {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, m|byte(n))
	case n < 1<<16:
		b = append(b, m|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if mask {
		var key [4]byte
		rand.Read(key[:])
		b = append(b, key[:]...)
		for i, c := range payload {
			b = append(b, c^key[i%4])
		}
	} else {
		b = append(b, payload...)
	}
	return b
}

// wsRead reads one frame (no fragments in these tests).
func wsRead(r *bufio.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var x [2]byte
		if _, err := io.ReadFull(r, x[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(x[:]))
	case 127:
		var x [8]byte
		if _, err := io.ReadFull(r, x[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(x[:])
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	var key [4]byte
	masked := h[1]&0x80 != 0
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return 0, nil, err
		}
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	if masked {
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return h[0] & 0x0f, payload, nil
}

// wsDial opens a WebSocket to addr's /ws.
func wsDial(addr string) (net.Conn, *bufio.Reader, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var key [16]byte
	rand.Read(key[:])
	k := base64.StdEncoding.EncodeToString(key[:])
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", k)
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err == nil && (resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(k)) {
		err = fmt.Errorf("handshake: status %d", resp.StatusCode)
	}
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, r, nil
}

// wsStats count what WebSocket clients saw.
type wsStats struct {
	replies, goingAway, failed atomic.Int64
	gens                       [8]atomic.Int64 // replies by generation
}

// wsClient sends messages and reads each reply, pause apart, until stop;
// on Close (going away) after a reply it answers Close and reconnects.
// A message without its reply is a failure.
func wsClient(addr string, pause time.Duration, st *wsStats, stop <-chan struct{}) {
	var c net.Conn
	var r *bufio.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		if c == nil {
			var err error
			if c, r, err = wsDial(addr); err != nil {
				st.failed.Add(1)
				time.Sleep(10 * time.Millisecond)
				continue
			}
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		msg := fmt.Sprintf("m%d", i)
		err := wsWrite(c, 1, []byte(msg), true)
		var op byte
		var reply []byte
		if err == nil {
			op, reply, err = wsRead(r)
		}
		if err == nil && (op != 1 || !strings.HasSuffix(string(reply), " "+msg)) {
			err = fmt.Errorf("op %d %q", op, reply)
		}
		if err != nil {
			st.failed.Add(1)
			c.Close()
			c = nil
			continue
		}
		st.replies.Add(1)
		var g int
		fmt.Sscanf(string(reply), "gen=%d", &g)
		st.gens[g%len(st.gens)].Add(1)
		time.Sleep(pause)
		// A Close may follow the reply.
		c.SetReadDeadline(time.Now())
		if _, err := r.Peek(1); err == nil {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if op, _, err := wsRead(r); err != nil || op != 8 {
				st.failed.Add(1)
			} else {
				st.goingAway.Add(1)
				wsWrite(c, 8, nil, true)
			}
			c.Close()
			c = nil
		}
	}
}

// TestWebSocketTakeovers: WebSocket connections (hijacked) next to
// HTTP/1 keep-alive ones. They do not hold the takeover up (the quiesce
// timeout is 5 s, which a takeover waiting for them would take); the
// HTTP/1 connections migrate; the predecessor's Drain returns only after
// every WebSocket handler has (ws-closed before drained); and the
// WebSocket clients, closed with 1001 after a reply, reconnect to the
// successor without losing a message.
func TestWebSocketTakeovers(t *testing.T) {
	const h1, ws, takeovers = 4, 4, 10
	const quiesce = 5 * time.Second
	restartCheckLeaks(t)
	dir := t.TempDir()
	g := startHTTPGens(t, httpGenEnv(dir, quiesce))
	l := newLoad()
	defer l.halt()
	l.h1Clients(g.addr, h1, 0, "/", 2*time.Millisecond, nil)
	var st wsStats
	stop := make(chan struct{})
	done := make(chan struct{}, ws)
	for range ws {
		go func() {
			wsClient(g.addr, 5*time.Millisecond, &st, stop)
			done <- struct{}{}
		}()
	}
	defer func() {
		close(stop)
		for range ws {
			<-done
		}
	}()
	awaitCount(t, &st.gens[1], 10*ws)
	for range takeovers {
		before := l.window()
		goingAway := st.goingAway.Load()
		prev, ready := g.takeover()
		prev.expect(fmt.Sprintf("exiting gen=%d", g.gen-1))
		lines := prev.until(fmt.Sprintf("drained gen=%d", g.gen-1))
		prev.mustExit()
		closed := 0
		for _, line := range lines {
			if strings.HasPrefix(line, "ws-closed") {
				closed++
			}
		}
		if closed != ws {
			t.Errorf("takeover to gen %d: %d WebSocket handlers returned before Drain did, want %d", g.gen, closed, ws)
		}
		if ready > quiesce/2 {
			t.Errorf("takeover to gen %d: successor ready after %v: it waited for the WebSockets", g.gen, ready)
		}
		l.allAt(t, h1, g.gen)
		awaitCount(t, &st.gens[g.gen%len(st.gens)], 10*ws)
		if m := l.window().migrated - before.migrated; m != h1 {
			t.Errorf("takeover to gen %d: %d HTTP/1 connections migrated, want %d", g.gen, m, h1)
		}
		if n := st.goingAway.Load() - goingAway; n != ws {
			t.Errorf("takeover to gen %d: %d WebSockets closed with going away, want %d", g.gen, n, ws)
		}
		t.Logf("takeover to gen %d: ready after %v", g.gen, ready.Round(time.Millisecond))
	}
	hst := l.halt()
	t.Logf("HTTP/1: %v; WebSocket: %d replies, %d closed going away, %d failed", hst, st.replies.Load(), st.goingAway.Load(), st.failed.Load())
	if hst.failed != 0 || st.failed.Load() != 0 {
		t.Errorf("failed: %d HTTP/1 requests (%q), %d WebSocket messages", hst.failed, hst.errs, st.failed.Load())
	}
}

// awaitCount waits until n reaches want.
func awaitCount(t *testing.T, n *atomic.Int64, want int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for n.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("count %d, want %d", n.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
}
