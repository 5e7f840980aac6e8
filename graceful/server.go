package graceful

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/fdpass/fdpass/unixmsg"
)

// The handler protocol, on top of unixmsg: the server sends one batch per
// client, whose own payload is handlerOK (the items are the descriptors,
// each item's name, meta and payload carrying its Meta) or handlerFail
// followed by the reason (no items). The client acknowledges the batch
// (unixmsg's ack); the server then runs the delivery callbacks and closes
// the connection, and the client, having seen that end, hands the
// descriptors to its callback.
const (
	handlerOK   = "fdpass-graceful-handler/1 ok"
	handlerFail = "fdpass-graceful-handler/1 fail "
)

// defaultSendTimeout bounds sending a batch and waiting for its
// acknowledgement when Server.Timeout is zero.
const defaultSendTimeout = 30 * time.Second

// maxFailReason bounds the handler failure reason sent to a client.
const maxFailReason = 1024

// Server sends every client that connects to its unix socket the batch
// its Handler builds. The zero value needs only a Handler; do not copy a
// Server after first use.
type Server struct {
	Handler Handler      // builds each client's batch; required
	Logger  *slog.Logger // if not nil, hears clients, batches and failures
	// Timeout bounds sending a batch and its acknowledgement. If zero,
	// 30s; if negative, none.
	Timeout time.Duration
	Options *unixmsg.Options // limits of each client's connection; NoAck is ignored

	MsgBufferSize, OOBBufferSize int // no effect; kept from the original API

	mu        sync.Mutex
	listeners map[*net.UnixListener]struct{}
	conns     map[*net.UnixConn]struct{}
	closed    bool
	active    sync.WaitGroup
}

// ListenAndServe is Server{Handler: h}.ListenAndServe(addr).
func ListenAndServe(addr string, h Handler) error {
	s := &Server{Handler: h}
	return s.ListenAndServe(addr)
}

// Serve is Server{Handler: h}.Serve(ln).
func Serve(ln *net.UnixListener, h Handler) error {
	s := &Server{Handler: h}
	return s.Serve(ln)
}

// ListenAndServe listens on the SOCK_SEQPACKET socket addr (a path or
// "@name"; a stale socket file is replaced, a live one is not) and calls
// Serve.
func (s *Server) ListenAndServe(addr string) error {
	if s.Handler == nil {
		return ErrNoHandler
	}
	ln, err := handlerListen(addr)
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// handlerListen listens on addr, replacing a stale socket file.
func handlerListen(addr string) (*net.UnixListener, error) {
	ua := &net.UnixAddr{Name: addr, Net: "unixpacket"}
	ln, err := net.ListenUnix("unixpacket", ua)
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) || len(addr) == 0 || addr[0] == '@' {
		return ln, err
	}
	if !handlerStaleSocket(addr) {
		return nil, err
	}
	if rerr := os.Remove(addr); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		return nil, err
	}
	return net.ListenUnix("unixpacket", ua)
}

// handlerStaleSocket reports whether the socket file at path is one nobody
// listens on: connecting to it is refused, whatever its type.
func handlerStaleSocket(path string) bool {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != os.ModeSocket {
		return false
	}
	for _, network := range []string{"unixpacket", "unix", "unixgram"} {
		c, err := net.Dial(network, path)
		if err == nil {
			c.Close()
			return false
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !handlerProtoMismatch(err) {
			return false
		}
	}
	return true
}

// handlerProtoMismatch reports whether err says the socket at an address is of
// another type than the one dialled.
func handlerProtoMismatch(err error) bool {
	return errors.Is(err, syscall.EPROTOTYPE) || errors.Is(err, syscall.EPROTONOSUPPORT) ||
		errors.Is(err, syscall.ESOCKTNOSUPPORT) || errors.Is(err, syscall.EOPNOTSUPP)
}

// Serve takes over ln ("unixpacket" or "unix") and serves each client that
// connects, retrying temporary accept errors. Once ln is closed and the
// clients are done it returns nil; another accept error, as it is.
func (s *Server) Serve(ln *net.UnixListener) error {
	if s.Handler == nil {
		return ErrNoHandler
	}
	if !s.track(ln) {
		ln.Close()
		return nil
	}
	defer s.untrack(ln)
	defer ln.Close()
	var clients sync.WaitGroup
	defer clients.Wait()
	var backoff time.Duration
	for {
		uc, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if handlerTemporary(err) {
				// Out of descriptors or the like: wait for some to be
				// freed, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logError("accept failed; retrying", err, slog.Duration("delay", backoff))
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if !s.trackConn(uc) {
			uc.Close()
			continue
		}
		clients.Add(1)
		go func() {
			defer clients.Done()
			defer s.untrackConn(uc)
			s.serveClient(uc)
		}()
	}
}

func handlerTemporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// serveClient builds, sends and delivers one client's batch, and closes
// uc.
func (s *Server) serveClient(uc *net.UnixConn) {
	peer := handlerPeerName(uc)
	s.logDebug("client connected", slog.String("client", peer))
	var opts unixmsg.Options
	if s.Options != nil {
		opts = *s.Options
	}
	// Delivery callbacks wait for the client's acknowledgement.
	opts.NoAck = false
	c, err := unixmsg.NewConn(uc, &opts)
	if err != nil {
		uc.Close()
		s.logError("client connection", err, slog.String("client", peer))
		return
	}
	defer c.Close()

	w := &responseWriter{s: s, peer: peer}
	defer w.batch.Close()
	w.handle(s.Handler, uc)

	if t := s.timeout(); t > 0 {
		c.SetDeadline(time.Now().Add(t))
	}
	if w.err != nil {
		s.logError("handler failed; sending no descriptors", w.err, slog.String("client", peer))
		w.batch.Close()
		var fail unixmsg.Batch
		reason := w.err.Error()
		if len(reason) > maxFailReason {
			reason = reason[:maxFailReason]
		}
		fail.SetPayload([]byte(handlerFail + reason))
		if err := c.Send(&fail); err != nil {
			s.logError("report handler failure", err, slog.String("client", peer))
		}
		return
	}
	w.batch.SetPayload([]byte(handlerOK))
	if err := c.Send(&w.batch); err != nil {
		s.logError("send descriptors", err, slog.String("client", peer), slog.Int("descriptors", w.batch.Len()))
		return
	}
	// The client holds its own descriptors now: let ours go before the
	// callbacks run, which may wait for the process to exit.
	w.batch.Close()
	s.logInfo("sent descriptors", slog.String("client", peer), slog.Int("descriptors", w.batch.Len()))
	for _, f := range w.delivered {
		s.runCallback(f, peer)
	}
}

func (s *Server) runCallback(f func(), peer string) {
	defer func() {
		if r := recover(); r != nil {
			s.logError("delivery callback panicked", fmt.Errorf("%v", r), slog.String("client", peer), slog.String("stack", string(debug.Stack())))
		}
	}()
	f()
}

func (s *Server) timeout() time.Duration {
	if s.Timeout == 0 {
		return defaultSendTimeout
	}
	return s.Timeout
}

// Close closes the listeners and the clients' connections at once:
// batches not yet acknowledged are not delivered. It does not wait, so a
// callback may call it.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	var err error
	for ln := range s.listeners {
		if cerr := ln.Close(); cerr != nil && err == nil && !errors.Is(cerr, net.ErrClosed) {
			err = cerr
		}
	}
	for uc := range s.conns {
		uc.Close()
	}
	s.mu.Unlock()
	return err
}

// Shutdown closes the listeners and waits for the clients being served,
// callbacks included; if ctx ends first, it closes them as Close does. A
// handler or callback must not call it.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	var err error
	for ln := range s.listeners {
		if cerr := ln.Close(); cerr != nil && err == nil && !errors.Is(cerr, net.ErrClosed) {
			err = cerr
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.active.Wait()
		close(done)
	}()
	select {
	case <-done:
		return err
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

func (s *Server) track(ln *net.UnixListener) bool { return track(s, &s.listeners, ln) }

func (s *Server) untrack(ln *net.UnixListener) { untrack(s, &s.listeners, ln) }

func (s *Server) trackConn(uc *net.UnixConn) bool { return track(s, &s.conns, uc) }

func (s *Server) untrackConn(uc *net.UnixConn) { untrack(s, &s.conns, uc) }

// track adds k to the set m of what Close must close, unless the server is
// closed already.
func track[K comparable](s *Server, m *map[K]struct{}, k K) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if *m == nil {
		*m = make(map[K]struct{})
	}
	(*m)[k] = struct{}{}
	s.active.Add(1)
	return true
}

func untrack[K comparable](s *Server, m *map[K]struct{}, k K) {
	s.mu.Lock()
	delete(*m, k)
	s.mu.Unlock()
	s.active.Done()
}

func (s *Server) logDebug(msg string, attrs ...any) {
	if s.Logger != nil {
		s.Logger.Debug("graceful: "+msg, attrs...)
	}
}

func (s *Server) logInfo(msg string, attrs ...any) {
	if s.Logger != nil {
		s.Logger.Info("graceful: "+msg, attrs...)
	}
}

func (s *Server) logError(msg string, err error, attrs ...any) {
	if s.Logger != nil {
		s.Logger.Error("graceful: "+msg, append([]any{slog.Any("error", err)}, attrs...)...)
	}
}

// handlerPeerName names a client for the log: its pid and uid where the platform
// tells them, else its address.
func handlerPeerName(uc *net.UnixConn) string {
	if p := handlerPeerCred(uc); p != "" {
		return p
	}
	if a := uc.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return "unnamed"
}

// responseWriter is the Server's ResponseWriter: a batch under
// construction, the first error, and the delivery callbacks.
type responseWriter struct {
	s         *Server
	peer      string
	batch     unixmsg.Batch
	err       error
	delivered []func()
}

// handle runs h, turning a panic into the batch's error.
func (w *responseWriter) handle(h Handler, conn net.Conn) {
	defer func() {
		if r := recover(); r != nil {
			w.s.logError("handler panicked", fmt.Errorf("%v", r), slog.String("client", w.peer), slog.String("stack", string(debug.Stack())))
			w.fail(fmt.Errorf("graceful: handler panicked: %v", r))
		}
	}()
	h.Handle(conn, w)
}

func (w *responseWriter) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

func (w *responseWriter) Write(fd int, meta Meta) error {
	if w.err != nil {
		return w.err
	}
	name, um, payload, err := meta.encode()
	if err == nil {
		err = w.batch.AddFD(name, fd, um, payload)
	}
	if err != nil {
		w.fail(fmt.Errorf("graceful: write descriptor %d (%q): %w", fd, meta.Name, err))
		return w.err
	}
	return nil
}

func (w *responseWriter) Add(v any, meta Meta) error {
	if w.err != nil {
		return w.err
	}
	if _, ok := v.(syscall.Conn); !ok {
		w.fail(fmt.Errorf("%w: %q is a %T", ErrNotFiler, meta.Name, v))
		return w.err
	}
	name, um, payload, err := meta.encode()
	if err == nil {
		err = w.batch.Add(name, v, um, payload)
	}
	if err != nil {
		w.fail(fmt.Errorf("graceful: add %q: %w", meta.Name, err))
		return w.err
	}
	return nil
}

func (w *responseWriter) OnDelivered(f func()) {
	if f != nil {
		w.delivered = append(w.delivered, f)
	}
}

func (w *responseWriter) Debugf(format string, args ...any) {
	if l := w.s.Logger; l != nil {
		l.Debug(fmt.Sprintf(format, args...), slog.String("client", w.peer))
	}
}

func (w *responseWriter) Infof(format string, args ...any) {
	if l := w.s.Logger; l != nil {
		l.Info(fmt.Sprintf(format, args...), slog.String("client", w.peer))
	}
}

func (w *responseWriter) Errorf(format string, args ...any) {
	err := fmt.Errorf(format, args...)
	if l := w.s.Logger; l != nil {
		l.Error(err.Error(), slog.String("client", w.peer))
	}
	w.fail(err)
}
