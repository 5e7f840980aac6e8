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
	var sizes []int
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go srv.Serve(&sizeListener{Listener: ln, record: func(n int) {
		mu.Lock()
		sizes = append(sizes, n)
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
		got := append([]int(nil), sizes...)
		mu.Unlock()
		// Reads for requests: the first, and the first after each answer
		// (net/http's background read of one byte comes in between).
		var starts []int
		for _, n := range got {
			if n > 1 {
				starts = append(starts, n)
			}
		}
		if len(starts) >= 3 {
			for i, n := range starts[:3] {
				if n != want {
					t.Fatalf("net/http's read %d for a request was of %d bytes, httpReadSize() = %d (all reads: %v)", i, n, want, got)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("net/http made reads of %v", got)
		}
		time.Sleep(time.Millisecond)
	}
}

// sizeListener records the size of every read of the connections it
// accepts.
type sizeListener struct {
	net.Listener
	record func(int)
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
	record func(int)
}

func (c *sizeConn) Read(b []byte) (int, error) {
	c.record(len(b))
	return c.Conn.Read(b)
}
