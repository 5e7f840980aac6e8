package load_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/load"
)

// server is a scripted HTTP/1.1 server on a real TCP socket. For each
// request it calls answer with the request's number on its connection
// (from 1) and overall (from 1); answer writes the response, or returns
// false to close the connection without one.
type server struct {
	ln       net.Listener
	answer   func(w *bufio.Writer, req *http.Request, onConn, overall int64) bool
	requests atomic.Int64 // requests read
	conns    atomic.Int64 // connections accepted
	wg       sync.WaitGroup
	mu       sync.Mutex
	open     map[net.Conn]struct{}
}

func newServer(t *testing.T, answer func(w *bufio.Writer, req *http.Request, onConn, overall int64) bool) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, answer: answer, open: map[net.Conn]struct{}{}}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			s.mu.Lock()
			s.open[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Go(func() { s.serve(c) })
		}
	})
	t.Cleanup(s.close)
	return s
}

func (s *server) serve(c net.Conn) {
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.open, c)
		s.mu.Unlock()
	}()
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	for n := int64(1); ; n++ {
		req, err := http.ReadRequest(r)
		if err != nil {
			return
		}
		overall := s.requests.Add(1)
		if !s.answer(w, req, n, overall) || w.Flush() != nil || req.Close {
			return
		}
	}
}

func (s *server) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *server) addr() string { return s.ln.Addr().String() }

// respond writes a response with the given instance header and body.
// The connection closes after it if close is set or the request asked.
func respond(w *bufio.Writer, req *http.Request, status int, instance string, close bool, body string) {
	fmt.Fprintf(w, "HTTP/1.1 %d %s\r\nContent-Length: %d\r\n", status, http.StatusText(status), len(body))
	if instance != "" {
		fmt.Fprintf(w, "X-Instance: %s\r\n", instance)
	}
	if close || req.Close {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n" + body)
}

// run starts a Load, waits until the server has read n requests, and
// stops it.
func run(t *testing.T, s *server, opts load.Options, n int64) load.Stats {
	t.Helper()
	opts.Addr = s.addr()
	l, err := load.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for s.requests.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the server read %d requests in 10s, want %d: %v", s.requests.Load(), n, l.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	st := l.Stop()
	t.Log(st)
	return st
}

// TestFailureCountedNotRetried closes every fifth connection's third
// request without an answer: each is one failed request, the client does
// not send it again, and every request the server read is counted once.
func TestFailureCountedNotRetried(t *testing.T) {
	var killed atomic.Int64
	s := newServer(t, func(w *bufio.Writer, req *http.Request, onConn, overall int64) bool {
		if onConn == 3 {
			killed.Add(1)
			return false
		}
		respond(w, req, 200, "a", false, "ok")
		return true
	})
	st := run(t, s, load.Options{KeepAlive: 4}, 200)
	if got, want := st.OK+st.Failed, s.requests.Load(); got != want {
		t.Errorf("the clients counted %d requests, the server read %d: a request was sent again or lost", got, want)
	}
	if st.Failed != killed.Load() || st.Failed == 0 {
		t.Errorf("%d requests failed, the server dropped %d", st.Failed, killed.Load())
	}
	if st.ErrorCount != st.Failed || len(st.Errors) == 0 {
		t.Errorf("%d errors recorded for %d failures: %q", st.ErrorCount, st.Failed, st.Errors)
	}
	if st.Dials != s.conns.Load() {
		t.Errorf("%d dials counted, the server accepted %d connections", st.Dials, s.conns.Load())
	}
	if st.Migrated != 0 || st.Redialled != 0 {
		t.Errorf("%d migrated, %d redialled, want 0", st.Migrated, st.Redialled)
	}
	if st.ConnectFailed != 0 || st.Refused != 0 {
		t.Errorf("%d requests counted as not connecting (%d refused); every one connected", st.ConnectFailed, st.Refused)
	}
}

// TestRefused: requests to a port nothing listens on fail to connect, each
// counted as refused; once a server listens there, they connect again.
func TestRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	l, err := load.Start(load.Options{Addr: addr, KeepAlive: 2, OneShot: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for l.Stats().Refused < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("not 20 refused connects in 10s: %v", l.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	st := l.Stop()
	t.Log(st)
	if st.Refused != st.Failed || st.ConnectFailed != st.Failed || st.OK != 0 || st.Dials != 0 {
		t.Errorf("every request was refused, yet: %v", st)
	}
	if len(st.Errors) == 0 || !strings.Contains(st.Errors[0], "refused") {
		t.Errorf("errors: %q", st.Errors)
	}
}

// TestMigratedAndRedialled answers each connection's first two requests as
// instance a, the next two as instance b (the connection moved, and the
// first answer from b is slow), the fourth with "Connection: close".
func TestMigratedAndRedialled(t *testing.T) {
	const moveDelay = 50 * time.Millisecond // the answer from b
	var switched, closed atomic.Int64
	s := newServer(t, func(w *bufio.Writer, req *http.Request, onConn, overall int64) bool {
		instance := "a"
		if onConn > 2 {
			instance = "b"
		}
		if onConn == 3 {
			switched.Add(1)
			time.Sleep(moveDelay)
		}
		if onConn == 4 {
			closed.Add(1)
		}
		respond(w, req, 200, instance, onConn == 4, "ok")
		return true
	})
	st := run(t, s, load.Options{KeepAlive: 3}, 300)
	if st.Failed != 0 {
		t.Errorf("%d requests failed: %q", st.Failed, st.Errors)
	}
	if st.OK != s.requests.Load() {
		t.Errorf("%d requests answered, the server read %d", st.OK, s.requests.Load())
	}
	if st.Migrated != switched.Load() || st.Migrated == 0 {
		t.Errorf("%d migrated, the server switched instance on %d connections", st.Migrated, switched.Load())
	}
	if st.Redialled != closed.Load() || st.Redialled == 0 {
		t.Errorf("%d redialled, the server closed %d connections", st.Redialled, closed.Load())
	}
	if st.Dials != s.conns.Load() {
		t.Errorf("%d dials counted, the server accepted %d connections", st.Dials, s.conns.Load())
	}
	if m := st.Slowest; !m.Moved || m.Duration < moveDelay || m.Instance != "b" {
		t.Errorf("slowest request: %v (moved %t), want the first from b, of at least %v", m, m.Moved, moveDelay)
	}
	if st.Instances["a"] == 0 || st.Instances["b"] == 0 || st.Instances["a"]+st.Instances["b"] != st.OK {
		t.Errorf("requests per instance %v, %d in all", st.Instances, st.OK)
	}
}

// TestBadResponses: each kind of bad response is one failed request.
func TestBadResponses(t *testing.T) {
	cases := []struct {
		name   string
		answer func(w *bufio.Writer, req *http.Request)
	}{
		{"status", func(w *bufio.Writer, req *http.Request) { respond(w, req, 500, "a", false, "no") }},
		{"no instance", func(w *bufio.Writer, req *http.Request) { respond(w, req, 200, "", false, "ok") }},
		{"body check", func(w *bufio.Writer, req *http.Request) { respond(w, req, 200, "a", false, "bad") }},
		{"short body", func(w *bufio.Writer, req *http.Request) {
			w.WriteString("HTTP/1.1 200 OK\r\nX-Instance: a\r\nContent-Length: 10\r\n\r\nok")
		}},
		{"garbage", func(w *bufio.Writer, req *http.Request) { w.WriteString("HTTP/1.1 2x0 OK\r\n\r\n") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var bad atomic.Int64
			s := newServer(t, func(w *bufio.Writer, req *http.Request, onConn, overall int64) bool {
				if overall%10 == 5 {
					bad.Add(1)
					tc.answer(w, req)
					// A broken response leaves the connection in an
					// unknown state: end it.
					return false
				}
				respond(w, req, 200, "a", false, "ok")
				return true
			})
			check := func(b []byte) error {
				if string(b) != "ok" {
					return errors.New("body is not ok")
				}
				return nil
			}
			st := run(t, s, load.Options{KeepAlive: 2, OneShot: 1, Check: check}, 100)
			if st.Failed != bad.Load() || st.Failed == 0 {
				t.Errorf("%d requests failed, the server answered %d badly: %q", st.Failed, bad.Load(), st.Errors)
			}
			if st.OK+st.Failed != s.requests.Load() {
				t.Errorf("the clients counted %d requests, the server read %d", st.OK+st.Failed, s.requests.Load())
			}
		})
	}
}

// TestOneShot: a one-shot client opens a connection per request, asks for
// it to be closed, and fails a response that keeps it open.
func TestOneShot(t *testing.T) {
	var asked, kept atomic.Int64
	s := newServer(t, func(w *bufio.Writer, req *http.Request, onConn, overall int64) bool {
		if req.Close {
			asked.Add(1)
		}
		keep := overall%10 == 7
		if keep {
			kept.Add(1)
		}
		respond(w, req, 200, "a", !keep, "ok")
		return !keep
	})
	st := run(t, s, load.Options{OneShot: 3}, 100)
	if st.Dials != s.conns.Load() || st.Dials != s.requests.Load() {
		t.Errorf("%d dials, %d connections, %d requests: want one request per connection", st.Dials, s.conns.Load(), s.requests.Load())
	}
	if asked.Load() != s.requests.Load() {
		t.Errorf("%d of %d requests asked to close the connection", asked.Load(), s.requests.Load())
	}
	if st.Failed != kept.Load() || st.OK+st.Failed != s.requests.Load() {
		t.Errorf("%d ok, %d failed; the server kept %d of %d connections open", st.OK, st.Failed, kept.Load(), s.requests.Load())
	}
	if st.Migrated != 0 || st.Redialled != 0 {
		t.Errorf("%d migrated, %d redialled, want 0 for one-shot clients", st.Migrated, st.Redialled)
	}
}

// TestDial: the clients' connections come from Options.Dial, here over a
// unix socket, and a failed dial is a failed request.
func TestDial(t *testing.T) {
	s := newServer(t, func(w *bufio.Writer, req *http.Request, onConn, overall int64) bool {
		respond(w, req, 200, "a", false, "ok")
		return true
	})
	path := filepath.Join(t.TempDir(), "http.sock")
	ul, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	go func() {
		// Relay each unix connection to the scripted TCP server.
		for {
			uc, err := ul.Accept()
			if err != nil {
				return
			}
			tc, err := net.Dial("tcp", s.addr())
			if err != nil {
				uc.Close()
				return
			}
			go func() { io.Copy(tc, uc); tc.(*net.TCPConn).CloseWrite() }()
			go func() { io.Copy(uc, tc); uc.Close(); tc.Close() }()
		}
	}()
	var dials, refused atomic.Int64
	dial := func(deadline time.Time) (net.Conn, error) {
		if dials.Add(1)%3 == 0 {
			refused.Add(1)
			return nil, errors.New("dial refused by the test")
		}
		d := net.Dialer{Deadline: deadline}
		return d.Dial("unix", path)
	}
	st := run(t, s, load.Options{KeepAlive: 1, OneShot: 2, Dial: dial}, 50)
	if st.Failed != refused.Load() || st.Failed == 0 {
		t.Errorf("%d requests failed, %d dials refused", st.Failed, refused.Load())
	}
	if st.Dials+refused.Load() != dials.Load() || st.Dials != s.conns.Load() {
		t.Errorf("%d dials counted, %d refused, %d made, %d connections served", st.Dials, refused.Load(), dials.Load(), s.conns.Load())
	}
}

// TestTimeout: a request the server never answers fails at the deadline,
// once.
func TestTimeout(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	s := newServer(t, func(w *bufio.Writer, req *http.Request, onConn, overall int64) bool {
		if overall == 3 {
			<-hold
			return false
		}
		respond(w, req, 200, "a", false, "ok")
		return true
	})
	const timeout = 200 * time.Millisecond
	st := run(t, s, load.Options{KeepAlive: 1, Timeout: timeout}, 10)
	if st.Failed != 1 || st.OK+st.Failed != s.requests.Load() {
		t.Errorf("%d ok, %d failed, %d read: want one failure", st.OK, st.Failed, s.requests.Load())
	}
	if !strings.Contains(strings.Join(st.Errors, "\n"), "timeout") {
		t.Errorf("errors %q, want a timeout", st.Errors)
	}
	if d := st.Slowest.Duration; d < timeout || st.Slowest.Err == nil {
		t.Errorf("slowest request %v, want the failed one of at least %v", st.Slowest, timeout)
	}
}

// TestWindow: a window sees the slow requests that end, or are in
// flight, while it is open, and only those.
func TestWindow(t *testing.T) {
	const slow = 300 * time.Millisecond
	held, release := make(chan struct{}), make(chan struct{})
	var phase atomic.Int64 // 1: one slow answer; 2: hold one request until release
	s := newServer(t, func(w *bufio.Writer, req *http.Request, onConn, overall int64) bool {
		switch {
		case phase.CompareAndSwap(1, 0):
			time.Sleep(slow)
		case phase.CompareAndSwap(2, 0):
			close(held)
			<-release
		}
		respond(w, req, 200, "a", false, "ok")
		return true
	})
	l, err := load.Start(load.Options{Addr: s.addr(), KeepAlive: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Stop()
	awaitRequests := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for s.requests.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("the server read %d requests, want %d", s.requests.Load(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	awaitRequests(20)
	before := l.Window()
	phase.Store(1)
	// Until the slow request has ended, as the Load's own counts say.
	deadline := time.Now().Add(10 * time.Second)
	for l.Stats().Slowest.Duration < slow {
		if time.Now().After(deadline) {
			t.Fatalf("no request of %v in 10s: %v", slow, l.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	bst := before.Close()
	if bst.Slowest.Duration < slow || bst.Slowest.InFlight {
		t.Errorf("window with the slow request: slowest %v, want at least %v", bst.Slowest, slow)
	}
	if total := l.Stats().OK; bst.OK == 0 || bst.OK >= total {
		t.Errorf("window counted %d requests of %d", bst.OK, total)
	}

	after := l.Window()
	awaitRequests(s.requests.Load() + 20)
	if st := after.Stats(); st.Slowest.Duration >= slow {
		t.Errorf("window after the slow request: slowest %v, want under %v", st.Slowest, slow)
	}
	phase.Store(2)
	<-held
	time.Sleep(slow) // the held request's age is what is measured
	st := after.Stats()
	if !st.Slowest.InFlight || st.Slowest.Duration < slow {
		t.Errorf("window with a request held: slowest %v, want one in flight for at least %v", st.Slowest, slow)
	}
	// A window opened while the request is held counts its wait from the
	// opening only.
	lateOpen := time.Now()
	late := l.Window()
	time.Sleep(slow / 3)
	close(release)
	if st := after.Close(); st.Slowest.Duration < slow {
		t.Errorf("closed window: slowest %v, want at least %v", st.Slowest, slow)
	}
	deadline = time.Now().Add(10 * time.Second)
	for late.Stats().OK == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no request answered in 10s after the release")
		}
		time.Sleep(time.Millisecond)
	}
	st = late.Close()
	if open := time.Since(lateOpen); st.Slowest.Duration < slow/3 || st.Slowest.Duration > open {
		t.Errorf("window open for %v while a request was held: slowest %v, want from %v to %v", open, st.Slowest, slow/3, open)
	}
	if all := l.Stop(); all.Slowest.Duration < slow || all.Failed != 0 {
		t.Errorf("overall: %v, want the slow request and no failure", all)
	}
}

// TestAwaitInFlight finds a request of the age asked for while requests
// take long enough, and none while they are quick.
func TestAwaitInFlight(t *testing.T) {
	const hold = 2 * time.Second
	var slow atomic.Bool
	s := newServer(t, func(w *bufio.Writer, req *http.Request, onConn, overall int64) bool {
		if slow.Load() {
			time.Sleep(hold)
		}
		respond(w, req, 200, "a", false, "ok")
		return true
	})
	start := time.Now()
	l, err := load.Start(load.Options{Addr: s.addr(), KeepAlive: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Stop()
	// Quick requests, for long enough that one stuck half a second
	// would have been seen.
	deadline := time.Now().Add(10 * time.Second)
	for s.requests.Load() < 50 || time.Since(start) < time.Second {
		if time.Now().After(deadline) {
			t.Fatalf("the server read %d requests in 10s, want 50", s.requests.Load())
		}
		time.Sleep(time.Millisecond)
	}
	if since, err := l.AwaitInFlight(500*time.Millisecond, time.Minute, 300*time.Millisecond); err == nil {
		t.Fatalf("quick requests: one in flight since %v, want none of 500ms or more", since)
	}
	slow.Store(true)
	since, err := l.AwaitInFlight(500*time.Millisecond, time.Second, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if age := time.Since(since); age < 500*time.Millisecond {
		t.Errorf("request in flight for %v, want at least 500ms", age)
	}
	// It is still in flight: the server holds each for 2s.
	busy := false
	for _, c := range l.Stats().Clients {
		busy = busy || c.InFlightSince.Equal(since)
	}
	if !busy {
		t.Errorf("the request found (since %v) is no longer in flight", since)
	}
}
