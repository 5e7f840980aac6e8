//go:build linux

package graceful

import (
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestHTTPReadSize: the size httpReadSize measured is the size of the
// read net/http makes of a real TCP connection before its first request,
// and of its next read once it has answered it with nothing pipelined:
// the read that HTTPServer's migration interrupts. A Go release whose
// net/http reads otherwise fails here (and TestMigrateHTTP finds no
// connection migrating) rather than turning migration off unseen.
func TestHTTPReadSize(t *testing.T) {
	want := httpReadSize()
	if want <= 0 {
		t.Fatalf("httpReadSize() = %d: net/http's reads could not be measured", want)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reads []sizedRead
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go srv.Serve(&sizeListener{Listener: ln, record: func(r sizedRead) {
		mu.Lock()
		reads = append(reads, r)
		mu.Unlock()
	}})
	defer srv.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 2 {
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1024)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(b); err != nil {
			t.Fatal(err)
		}
	}
	// The third read waits for a request: it has started once its size
	// is recorded.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := append([]sizedRead(nil), reads...)
		mu.Unlock()
		// Reads for requests: the first, and the first after each answer.
		// net/http's background read of one byte comes in between; when
		// the next request arrives before it is stopped, the byte it got
		// is held and the next read is that much shorter (a connection
		// HTTPServer then does not take for idle).
		var starts, held []int
		h := 0
		for _, r := range got {
			if r.size == 1 {
				h += r.n
				continue
			}
			starts, held = append(starts, r.size), append(held, h)
			h = 0
		}
		if len(starts) >= 3 {
			for i, n := range starts[:3] {
				if n+held[i] != want {
					t.Fatalf("net/http's read %d for a request was of %d bytes with %d held, httpReadSize() = %d (all reads: %v)", i, n, held[i], want, got)
				}
			}
			if starts[0] != want {
				t.Fatalf("net/http's first read of a connection was of %d bytes, httpReadSize() = %d", starts[0], want)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("net/http made reads of %v", got)
		}
		time.Sleep(time.Millisecond)
	}
}

// sizedRead is one read of a connection: the buffer's size, and (for a
// read of one byte) how much it returned.
type sizedRead struct{ size, n int }

// sizeListener records the size of every read of the connections it
// accepts.
type sizeListener struct {
	net.Listener
	record func(sizedRead)
}

func (l *sizeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sizeConn{Conn: c, record: l.record}, nil
}

type sizeConn struct {
	net.Conn
	record func(sizedRead)
}

// Read records a read: one of more than a byte when it starts (so that a
// read still waiting is seen), net/http's background read of one byte
// when it returns, with what it got.
func (c *sizeConn) Read(b []byte) (int, error) {
	if len(b) != 1 {
		c.record(sizedRead{size: len(b)})
		return c.Conn.Read(b)
	}
	n, err := c.Conn.Read(b)
	c.record(sizedRead{1, n})
	return n, err
}
