package graceful

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// HTTPServer serves a net/http Server so that its keep-alive connections
// migrate at a takeover (with Options.Migrate set on both sides): a
// connection that waits for its next request moves to the successor at
// once; one in the middle of a request moves as soon as its response is
// written, within Options.QuiesceTimeout; one that cannot move (still busy,
// or holding the first bytes of a pipelined request) stays, and from the
// takeover on its next response says "Connection: close". No byte a client
// sent is lost either way.
//
// Only HTTP/1 over plain TCP or unix sockets migrates (a TLS session's
// state lives in the process). It relies on net/http reading connections
// through a 4 KiB bufio.Reader, and migrates a connection only when a read
// shows that reader empty; with any other reader size nothing migrates and
// Drain ends connections as before.
type HTTPServer struct {
	p    *Process
	srv  *http.Server
	user func(net.Conn, http.ConnState)

	draining atomic.Bool
	mu       sync.Mutex
	ln       *httpListener
	queue    []*Conn // migrated in before Serve
	conns    map[net.Conn]int
	zero     chan struct{}
}

// httpState tags the state of a migrating HTTP connection.
const httpState = "net/http"

// httpReadBuf is the size of net/http's connection reader: a read of
// exactly this size is made with the reader empty.
const httpReadBuf = 4 << 10

// HTTP prepares srv to be served with live migration. It wraps srv's
// ConnState hook and Handler (the ones set now keep working); then call
// Serve instead of srv.Serve, and Drain after Exit instead of
// srv.Shutdown. In a successor, the HTTP connections that migrated are
// served by the HTTPServer; MigratedConns does not return them.
func (p *Process) HTTP(srv *http.Server) *HTTPServer {
	hs := &HTTPServer{p: p, srv: srv, user: srv.ConnState, conns: map[net.Conn]int{}, zero: make(chan struct{}, 1)}
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hs.ending() {
			// This process ends: the connection ends cleanly after this
			// response, before the client sends on it again.
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
	srv.ConnState = hs.connState
	p.mig.mu.Lock()
	p.mig.sinks = append(p.mig.sinks, hs.adopt)
	p.mig.mu.Unlock()
	return hs
}

// ending reports whether a successor took over (or the Process closed),
// or Drain was called.
func (hs *HTTPServer) ending() bool {
	select {
	case <-hs.p.Exit():
		return true
	default:
		return hs.draining.Load()
	}
}

// adopt takes a connection migrated in, if it is an HTTP one.
func (hs *HTTPServer) adopt(c *Conn) bool {
	if string(c.State()) != httpState {
		return false
	}
	c.mu.Lock()
	c.hs = hs
	c.mu.Unlock()
	hs.mu.Lock()
	ln := hs.ln
	if ln == nil {
		hs.queue = append(hs.queue, c)
	}
	hs.mu.Unlock()
	if ln != nil {
		ln.push(c)
	}
	return true
}

// Serve serves HTTP on ln, as srv.Serve does, tracking every connection
// for migration. Closing ln, or Drain, ends it; like srv.Serve it returns
// an error that, after that, matches net.ErrClosed.
func (hs *HTTPServer) Serve(ln net.Listener) error {
	l := &httpListener{Listener: ln, hs: hs, conns: make(chan net.Conn), done: make(chan struct{}), accepted: make(chan struct{})}
	hs.mu.Lock()
	hs.ln = l
	queue := hs.queue
	hs.queue = nil
	hs.mu.Unlock()
	// net/http takes them from Accept, which it calls only once Serve
	// below runs: pushing them here first would block for good.
	for _, c := range queue {
		go l.push(c)
	}
	go l.accept()
	return hs.srv.Serve(l)
}

// Drain ends this process's HTTP service after a takeover: it stops
// accepting, answers every further request with "Connection: close", and
// waits for the connections that stayed to end, or for ctx; then it closes
// what is left. Connections that migrated are the successor's and are not
// waited for.
func (hs *HTTPServer) Drain(ctx context.Context) error {
	hs.draining.Store(true)
	hs.mu.Lock()
	ln := hs.ln
	hs.mu.Unlock()
	if ln != nil {
		ln.Close()
		// Whatever was accepted is counted before the count is read.
		select {
		case <-ln.accepted:
		case <-ctx.Done():
		}
	}
	for {
		hs.mu.Lock()
		n := len(hs.conns)
		hs.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-hs.zero:
		case <-ctx.Done():
			return errors.Join(ctx.Err(), hs.srv.Close())
		}
	}
}

func (hs *HTTPServer) connState(nc net.Conn, st http.ConnState) {
	if c, ok := nc.(*Conn); ok {
		c.httpState(st)
	}
	// Count per connection: a connection that resumes after a failed
	// migration is served anew, and its StateNew may come before the
	// StateClosed of its first round.
	hs.mu.Lock()
	switch st {
	case http.StateNew:
		hs.conns[nc]++
	case http.StateClosed, http.StateHijacked:
		if hs.conns[nc]--; hs.conns[nc] <= 0 {
			delete(hs.conns, nc)
		}
		if len(hs.conns) == 0 {
			select {
			case hs.zero <- struct{}{}:
			default:
			}
		}
	}
	hs.mu.Unlock()
	if hs.user != nil {
		hs.user(nc, st)
	}
}

// httpListener is the listener net/http serves: what the real listener
// accepts, tracked, and the connections that migrated in or resumed.
type httpListener struct {
	net.Listener
	hs       *HTTPServer
	conns    chan net.Conn
	errc     chan error
	done     chan struct{}
	accepted chan struct{} // closed when accept returns
	once     sync.Once
}

func (l *httpListener) accept() {
	defer close(l.accepted)
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.Close()
			return
		}
		c := l.hs.p.Track(nc)
		c.mu.Lock()
		c.hs = l.hs
		c.mu.Unlock()
		if !l.push(c) {
			return
		}
	}
}

// push hands c to net/http. When the listener has closed meanwhile (a
// connection accepted as Drain began, or one that stayed after a failed
// migration), c is served on its own instead: closing it could cut a
// request the client has already sent (the kernel answers unread data
// with a reset).
func (l *httpListener) push(c *Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		l.hs.serveOne(l.Listener, c)
		return false
	}
}

// serveOne serves c with the Server, on a listener that yields c alone, and
// returns once net/http counts it (ConnState StateNew has run), so that
// Drain waits for it.
func (hs *HTTPServer) serveOne(parent net.Listener, c *Conn) {
	one := &oneConnListener{Listener: parent, c: c, served: make(chan struct{}), closed: make(chan struct{})}
	ret := make(chan error, 1)
	go func() { ret <- hs.srv.Serve(one) }()
	select {
	case <-one.served:
	case <-ret:
		// The Server was closed (Drain ran out of time): nothing serves.
		c.Close()
	}
}

// oneConnListener yields one connection, then blocks until closed.
type oneConnListener struct {
	net.Listener // for Addr
	c            net.Conn
	served       chan struct{}
	closed       chan struct{}
	sonce, once  sync.Once
}

// Accept is called by net/http's Serve loop only, one call at a time.
func (l *oneConnListener) Accept() (net.Conn, error) {
	if c := l.c; c != nil {
		l.c = nil
		return c, nil
	}
	// Serve asks again only after it has set c's state to StateNew.
	l.sonce.Do(func() { close(l.served) })
	<-l.closed
	return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *httpListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
	}
}

func (l *httpListener) Close() error {
	var err error
	l.once.Do(func() {
		err = l.Listener.Close()
		close(l.done)
	})
	return err
}

// resume gives a connection that did not migrate back to net/http.
func (hs *HTTPServer) resume(c *Conn) {
	hs.mu.Lock()
	ln := hs.ln
	hs.mu.Unlock()
	if ln == nil {
		c.Close()
		return
	}
	go ln.push(c)
}
