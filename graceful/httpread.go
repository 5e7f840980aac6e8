package graceful

import (
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// net/http reads a connection through a bufio.Reader, and refills it with
// one read of all its free space: with the reader empty, a read of the
// whole buffer. A read of that size, the first since the connection became
// idle, is made with nothing of the next request held: the one read a
// migration may interrupt (httpGate). Any other read is not: the reader
// holds the first bytes of a pipelined request, or of a header line longer
// than its buffer. The size is measured here, once, on a Server of its
// own, rather than assumed: a Go release that changes it changes the
// measurement too.

var readSize struct {
	once sync.Once
	n    int
}

// httpReadSize returns the size of the read net/http makes of a new
// connection, with its reader empty, or 0 if it could not be measured.
func httpReadSize() int {
	readSize.once.Do(func() { readSize.n = measureReadSize() })
	return readSize.n
}

// measureReadSize serves a connection that ends at its first read, and
// returns the size of that read.
func measureReadSize() int {
	a, b := net.Pipe()
	defer b.Close()
	c := &firstRead{Conn: a, size: make(chan int, 1)}
	srv := &http.Server{Handler: http.NotFoundHandler(), ErrorLog: nil}
	ln := &oneConnListener{Listener: noListener{}, c: c, served: make(chan struct{}), closed: make(chan struct{})}
	go srv.Serve(ln)
	defer srv.Close()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case n := <-c.size:
		return n
	case <-t.C:
		return 0
	}
}

// firstRead reports the size of its first read, which ends the
// connection.
type firstRead struct {
	net.Conn
	size chan int
	once sync.Once
}

func (c *firstRead) Read(b []byte) (int, error) {
	c.once.Do(func() { c.size <- len(b) })
	return 0, io.EOF
}
