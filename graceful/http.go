package graceful

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/fdpass/fdpass/internal/handoffmsg"
)

// HTTPServer serves a net/http Server across takeovers. What a client
// sees at a takeover depends on its connection:
//
//   - HTTP/1 over plain TCP or a unix socket (the listener returns
//     *net.TCPConn or *net.UnixConn): the keep-alive connection migrates
//     to the successor (with Options.Migrate on both sides), an idle one
//     at once, a busy one once its response is written (after the
//     takeover if need be: no connection waits for another), within
//     QuiesceTimeout, with the next request the client sends as soon as
//     it has the answer; one that cannot move answers "Connection: close"
//     from then on.
//   - HTTP/2 (cleartext with the preface, as srv.Protocols allows, or h2
//     over TLS): never migrates; it gets GOAWAY at the takeover, idle or
//     not, and its streams finish here.
//   - Any other connection, such as TLS from a tls.NewListener: never
//     migrates; HTTP/1 answers "Connection: close" from the takeover on.
//   - A hijacked connection (a WebSocket, say) is the handler's: it
//     stays here, and Drain waits for the handler to return. Learn of the
//     takeover from Process.Exit and end it as the protocol allows.
//     x/net/http2/h2c's handler hijacks its connections too: they get no
//     GOAWAY from HTTPServer; serve cleartext HTTP/2 with srv.Protocols
//     (SetUnencryptedHTTP2) instead.
//
// For HTTPS, serve a tls.NewListener of the listener with "h2" and
// "http/1.1" in its NextProtos.
//
// HTTPServer serves HTTP/2 with net/http's own implementation: Serve sets
// srv.TLSNextProto, unless the application set it (x/net/http2's
// ConfigureServer, or to turn HTTP/2 off); HTTP/2 connections served
// that way do not migrate either, but get GOAWAY only with the first
// response after the takeover.
type HTTPServer struct {
	p    *Process
	srv  *http.Server
	user func(net.Conn, http.ConnState)
	gate httpGate

	h2once   sync.Once
	h2       atomic.Pointer[http.Server] // sends GOAWAY to HTTP/2 connections (http2.go)
	h2mu     sync.Mutex
	h2conns  map[*h2Conn]struct{}
	h2round  sync.Mutex    // one GOAWAY round at a time
	handlers atomic.Int64  // handlers running
	draining atomic.Bool   //
	zero     chan struct{} // a count Drain waits for may have reached zero
	mu       sync.Mutex
	ln       *httpListener
	queue    []*Conn // migrated in before Serve
	conns    map[net.Conn]int
	resumed  map[net.Conn]int // rounds counted in conns before their StateNew
}

// httpState tags the state of a migrating HTTP connection.
const httpState = "net/http"

// checkHTTP returns an error if a connection tagged as an HTTPServer's
// comes with bytes read and not processed: HTTPServer hands over only
// connections whose reader holds nothing (HANDOFF.md).
func checkHTTP(conns []*Conn) error {
	for _, c := range conns {
		if string(c.State()) == httpState && c.Buffered() > 0 {
			return handoffmsg.Errf(ErrMalformed, "an HTTP connection comes with %d unread bytes", c.Buffered())
		}
	}
	return nil
}

// httpGate is the migrate.Gate of the connections an HTTPServer serves:
// net/http reads them, so a migration interrupts only a read for the next
// request with nothing buffered: the first read since the connection
// became idle (ConnState), of the size net/http reads with its reader
// empty (httpread.go). When net/http closes a connection whose read was
// interrupted, the connection is handed over, or served anew.
type httpGate struct {
	hs    *HTTPServer
	empty int // the size of a read with net/http's reader empty
}

func (g httpGate) AtBoundary(n int) bool { return n == g.empty }

func (g httpGate) Abandoned(c *Conn) {
	if !c.Handoff([]byte(httpState), nil) {
		g.hs.resume(c)
	}
}

// HTTP wraps srv's Handler and ConnState for live migration: call Serve
// instead of srv.Serve, and Drain after Exit instead of srv.Shutdown. The
// HTTP connections that migrate in are served by it.
func (p *Process) HTTP(srv *http.Server) *HTTPServer {
	hs := &HTTPServer{p: p, srv: srv, user: srv.ConnState, conns: map[net.Conn]int{}, resumed: map[net.Conn]int{}, zero: make(chan struct{}, 1)}
	hs.gate = httpGate{hs: hs, empty: httpReadSize()}
	if hs.gate.empty == 0 {
		p.log.Warn("graceful: cannot tell how net/http reads a connection; HTTP connections will not migrate")
	}
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs.handlers.Add(1)
		defer hs.handlerDone()
		if hs.ending() && hs.stays(r) {
			// This process ends: the connection ends cleanly after this
			// response, before the client sends on it again.
			w.Header().Set("Connection", "close")
		}
		if c, ok := r.Context().Value(connKey{}).(*Conn); ok && r.ProtoMajor == 1 {
			// From the end of the request's body, net/http reads the
			// connection only to watch for the client (Conn.Watch).
			if r.Body == nil || r.Body == http.NoBody {
				c.Watch()
			} else {
				r.Body = &watchAtEOF{ReadCloser: r.Body, c: c}
			}
		}
		h.ServeHTTP(w, r)
	})
	srv.ConnState = hs.connState
	userCtx := srv.ConnContext
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if userCtx != nil {
			ctx = userCtx(ctx, c)
		}
		return context.WithValue(ctx, connKey{}, c)
	}
	p.mig.AddSink(hs.adopt)
	return hs
}

// watchAtEOF is a request's body that, once read whole, tells its
// connection that net/http only watches it from then on.
type watchAtEOF struct {
	io.ReadCloser
	c *Conn
}

func (b *watchAtEOF) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.c.Watch()
	}
	return n, err
}

// connKey keys the connection of a request in its context.
type connKey struct{}

// stays reports whether the connection of r is to end here after the
// takeover: not one a migration still waits for (it moves once its
// response is written), nor HTTP/2 served by net/http's implementation
// here, which gets GOAWAY in two steps (http2.go) rather than in one,
// which "Connection: close" in a response would send.
func (hs *HTTPServer) stays(r *http.Request) bool {
	if r.ProtoMajor >= 2 {
		return hs.h2.Load() == nil
	}
	c, ok := r.Context().Value(connKey{}).(*Conn)
	return !ok || !c.Quiescing()
}

func (hs *HTTPServer) handlerDone() {
	if hs.handlers.Add(-1) == 0 && hs.draining.Load() {
		hs.signalZero()
	}
}

func (hs *HTTPServer) signalZero() {
	select {
	case hs.zero <- struct{}{}:
	default:
	}
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
	c.SetGate(hs.gate)
	hs.mu.Lock()
	ln := hs.ln
	drained := ln == nil && hs.draining.Load()
	if ln == nil && !drained {
		hs.queue = append(hs.queue, c)
	}
	hs.mu.Unlock()
	switch {
	case drained:
		c.Close()
	case ln != nil:
		ln.push(c)
	}
	return true
}

// Serve is srv.Serve(ln), tracking every connection for migration. After
// Drain it closes ln and returns http.ErrServerClosed.
func (hs *HTTPServer) Serve(ln net.Listener) error {
	hs.h2once.Do(hs.setupHTTP2)
	l := &httpListener{Listener: ln, hs: hs, conns: make(chan net.Conn), done: make(chan struct{}), accepted: make(chan struct{})}
	hs.mu.Lock()
	if hs.draining.Load() {
		// Drain ran first (a Serve goroutine that started late): serve
		// nothing, as net/http's Serve after Shutdown.
		hs.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
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
	go func() {
		// The successor accepts from now on; Serve returns at Drain.
		select {
		case <-hs.p.Exit():
			l.stopAccepting()
		case <-l.done:
		}
	}()
	err := hs.srv.Serve(l)
	if hs.draining.Load() {
		// Drain closed ln: as net/http's Serve after Shutdown.
		return http.ErrServerClosed
	}
	return err
}

// Drain makes Serve return, answers further requests with "Connection:
// close" (HTTP/2: sends GOAWAY), and waits for the connections that stayed
// to end and the handlers to return (those of hijacked connections
// included), or for ctx; then it closes what is left. A Serve that starts
// after it serves nothing. (At a takeover the HTTPServer stops accepting
// and sends GOAWAY by itself, when Exit is closed.)
func (hs *HTTPServer) Drain(ctx context.Context) error {
	hs.goAway()
	hs.mu.Lock()
	// Under mu: a Serve that has not set ln yet sees it and returns.
	hs.draining.Store(true)
	ln := hs.ln
	queue := hs.queue
	hs.queue = nil
	hs.mu.Unlock()
	// Connections that migrated in with nothing to serve them: idle ones
	// (HANDOFF.md), which a client may see closed at any time.
	for _, c := range queue {
		c.Close()
	}
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
		if n == 0 && hs.handlers.Load() == 0 {
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
		switch st {
		case http.StateNew, http.StateIdle:
			c.SetIdle(true)
		case http.StateActive:
			c.SetIdle(false)
		case http.StateHijacked:
			// The handler reads it now, and cannot hand it over.
			c.Stay()
		}
	}
	// Count per connection: a connection that resumes after a failed
	// migration is served anew, and its StateNew may come before the
	// StateClosed of its first round.
	hs.mu.Lock()
	switch st {
	case http.StateNew:
		if hs.resumed[nc] > 0 {
			// Counted when it resumed.
			if hs.resumed[nc]--; hs.resumed[nc] == 0 {
				delete(hs.resumed, nc)
			}
		} else {
			hs.conns[nc]++
		}
	case http.StateClosed, http.StateHijacked:
		hs.uncount(nc)
	}
	hs.mu.Unlock()
	if hs.user != nil {
		hs.user(nc, st)
	}
}

// migratable reports whether a connection the listener accepted can
// migrate: a socket itself, not a TLS connection or another wrapper, which
// would hold state of its own.
func migratable(nc net.Conn) bool {
	switch nc.(type) {
	case *net.TCPConn, *net.UnixConn:
		return true
	}
	return false
}

// httpListener is the listener net/http serves: what the real listener
// accepts, tracked, and the connections that migrated in or resumed.
type httpListener struct {
	net.Listener
	hs       *HTTPServer
	conns    chan net.Conn
	done     chan struct{}
	accepted chan struct{} // closed when accept returns
	once     sync.Once
	stopped  atomic.Bool // stopAccepting was called
}

// stopAccepting closes the real listener, but not l: net/http waits in
// Accept until Drain closes it.
func (l *httpListener) stopAccepting() {
	l.stopped.Store(true)
	l.Listener.Close()
}

func (l *httpListener) accept() {
	defer close(l.accepted)
	var b acceptBackoff
	for {
		select {
		case <-l.hs.p.AcceptWait():
		case <-l.done:
		}
		nc, err := l.Listener.Accept()
		if err != nil {
			// Running out of descriptors under a flood of connections
			// must not end the service: only a closed listener does.
			if b.retry(err, l.hs.p.log, l.Addr().String()) {
				continue
			}
			if !l.stopped.Load() {
				l.Close()
			}
			return
		}
		b.reset()
		if migratable(nc) {
			nc = l.hs.p.mig.Track(nc, l.hs.gate)
		}
		if !l.push(nc) {
			return
		}
	}
}

// push hands c to net/http. When the listener has closed meanwhile (a
// connection accepted as Drain began, or one that stayed after a failed
// migration), c is served on its own instead: closing it could cut a
// request the client has already sent (the kernel answers unread data
// with a reset).
func (l *httpListener) push(c net.Conn) bool {
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
func (hs *HTTPServer) serveOne(parent net.Listener, c net.Conn) {
	one := &oneConnListener{Listener: parent, c: c, served: make(chan struct{}), closed: make(chan struct{})}
	ret := make(chan error, 1)
	go func() { ret <- hs.srv.Serve(one) }()
	select {
	case <-one.served:
	case <-ret:
		// The Server was closed (Drain ran out of time): nothing serves.
		hs.mu.Lock()
		if hs.resumed[c] > 0 {
			if hs.resumed[c]--; hs.resumed[c] == 0 {
				delete(hs.resumed, c)
			}
			hs.uncount(c)
		}
		hs.mu.Unlock()
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
//
// It is counted at once, before net/http has closed its first round:
// otherwise Drain could find no connection in between, return, and let the
// process exit with the connection's next request unread (the kernel
// answers that with a reset).
func (hs *HTTPServer) resume(c *Conn) {
	hs.mu.Lock()
	ln := hs.ln
	if ln != nil {
		hs.conns[c]++
		hs.resumed[c]++
	}
	hs.mu.Unlock()
	if ln == nil {
		c.Close()
		return
	}
	go ln.push(c)
}

// uncount ends one round of nc, with hs.mu held.
func (hs *HTTPServer) uncount(nc net.Conn) {
	if hs.conns[nc]--; hs.conns[nc] <= 0 {
		delete(hs.conns, nc)
	}
	if len(hs.conns) == 0 {
		hs.signalZero()
	}
}
