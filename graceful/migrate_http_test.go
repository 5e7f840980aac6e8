//go:build linux

package graceful_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/graceful"
	"golang.org/x/sys/unix"
)

// httpGen is one generation of an HTTP service on a Process with live
// migration. Its handler answers "gen=N path"; a request for /block waits
// until release is closed.
type httpGen struct {
	p       *graceful.Process
	hs      *graceful.HTTPServer
	ln      net.Listener
	served  chan error
	release chan struct{}
	blocked chan struct{}
}

func startHTTPGen(t *testing.T, path string) *httpGen {
	t.Helper()
	return startHTTPGenServing(t, path, false)
}

// stop drains a generation that was taken over.
func (g *httpGen) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.hs.Drain(ctx); err != nil {
		t.Errorf("drain: %v", err)
	}
	if err := <-g.served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	g.p.Close()
}

// httpExchange writes raw request bytes and reads one response; closing
// reports "Connection: close".
func httpExchange(t *testing.T, c net.Conn, r *bufio.Reader, req string) (body string, closing bool) {
	t.Helper()
	if req != "" {
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("reading the response to %q: %v", req, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), resp.Close
}

// TestMigrateHTTP: at a takeover an idle keep-alive connection moves, a
// busy one moves once its response is written, and one whose server holds
// the first bytes of a pipelined request moves once it has answered it.
// No byte is lost.
func TestMigrateHTTP(t *testing.T) {
	restartCheckLeaks(t)
	path := filepath.Join(t.TempDir(), "h.sock")
	g1 := startHTTPGen(t, path)
	addr := g1.ln.Addr().String()
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		return c, bufio.NewReader(c)
	}
	get := func(p string) string { return "GET " + p + " HTTP/1.1\r\nHost: x\r\n\r\n" }

	idle, idleR := dial()
	defer idle.Close()
	if body, _ := httpExchange(t, idle, idleR, get("/a")); body != "gen=1 /a" {
		t.Fatalf("idle: %q", body)
	}
	busy, busyR := dial()
	defer busy.Close()
	io.WriteString(busy, get("/block"))
	<-g1.blocked
	partial, partialR := dial()
	defer partial.Close()
	// A request and the first two bytes of the next one, in one write.
	if body, _ := httpExchange(t, partial, partialR, get("/p1")+"GE"); body != "gen=1 /p1" {
		t.Fatalf("partial: %q", body)
	}

	ready := make(chan *httpGen)
	go func() { ready <- startHTTPGen(t, path) }()
	// The busy connection holds the migration up until it is answered.
	close(g1.release)
	if body, _ := httpExchange(t, busy, busyR, ""); body != "gen=1 /block" {
		t.Errorf("busy: %q", body)
	}
	g2 := <-ready
	<-g1.p.Exit()
	if body, _ := httpExchange(t, idle, idleR, get("/b")); body != "gen=2 /b" {
		t.Errorf("idle connection after the takeover: %q", body)
	}
	if body, _ := httpExchange(t, busy, busyR, get("/c")); body != "gen=2 /c" {
		t.Errorf("busy connection after the takeover: %q", body)
	}
	// The rest of the pipelined request reaches the process that holds
	// its first bytes, which answers it, and hands the connection over
	// after the response (late, after DONE): the next request is the
	// successor's, on the same connection.
	if body, closing := httpExchange(t, partial, partialR, "T /p2 HTTP/1.1\r\nHost: x\r\n\r\n"); body != "gen=1 /p2" || closing {
		t.Errorf("pipelined request: %q, Connection: close %v", body, closing)
	}
	// Sent at once: net/http's background read, while /p2 was served,
	// did not take its first byte (httpGate.Watching).
	if body, closing := httpExchange(t, partial, partialR, get("/p3")); body != "gen=2 /p3" || closing {
		t.Errorf("the pipelined connection's request after its response: %q, Connection: close %v", body, closing)
	}
	g1.stop(t)
	idle.Close()
	busy.Close()
	partial.Close()
	g2.stop(t)
}

// TestMigrateHTTPNextAtOnce: clients whose requests are in hand at a
// takeover send their next request as soon as they have the answer, as
// keep-alive clients do. Each connection moves after its answer, and the
// successor answers the next request: net/http's background read, which
// runs while a handler does, must not take its first byte.
func TestMigrateHTTPNextAtOnce(t *testing.T) {
	// GET has no body; the POST's handler reads its body whole before it
	// blocks, as net/http watches the connection only from then on.
	t.Run("GET", func(t *testing.T) { testNextAtOnce(t, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n") })
	t.Run("POST", func(t *testing.T) {
		testNextAtOnce(t, "POST /block HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	})
}

// testNextAtOnce is TestMigrateHTTPNextAtOnce with first as the request
// in hand at the takeover.
func testNextAtOnce(t *testing.T, first string) {
	restartCheckLeaks(t)
	const clients = 64
	path := filepath.Join(t.TempDir(), "h.sock")
	g1 := startHTTPGenQuiesce(t, path, false, 20*time.Second)
	addr := g1.ln.Addr().String()
	get := func(p string) string { return "GET " + p + " HTTP/1.1\r\nHost: x\r\n\r\n" }
	conns := make([]net.Conn, clients)
	readers := make([]*bufio.Reader, clients)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		conns[i], readers[i] = c, bufio.NewReader(c)
		io.WriteString(c, first)
		<-g1.blocked
	}
	// Every handler is busy: the successor's Ready returns with none
	// of the connections moved, and they move late.
	g2 := startHTTPGen(t, path)
	<-g1.p.Exit()
	type answer struct {
		first, next string
		closing     bool
	}
	answers := make(chan answer, clients)
	for i, c := range conns {
		go func() {
			r := readers[i]
			resp, err := http.ReadResponse(r, nil)
			if err != nil {
				answers <- answer{first: err.Error()}
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				answers <- answer{first: err.Error()}
				return
			}
			// At once, as a keep-alive client does.
			if _, err := io.WriteString(c, get(fmt.Sprintf("/next%d", i))); err != nil {
				answers <- answer{first: string(b), next: err.Error()}
				return
			}
			resp, err = http.ReadResponse(r, nil)
			if err != nil {
				answers <- answer{first: string(b), next: err.Error()}
				return
			}
			nb, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				nb = []byte(err.Error())
			}
			answers <- answer{first: string(b), next: string(nb), closing: resp.Close}
		}()
	}
	close(g1.release)
	moved := 0
	for range clients {
		a := <-answers
		if a.first != "gen=1 /block" {
			t.Errorf("answer to the request in hand at the takeover: %q", a.first)
			continue
		}
		if strings.HasPrefix(a.next, "gen=2 /next") && !a.closing {
			moved++
		} else {
			t.Errorf("next request, sent as soon as the answer came: %q, Connection: close %v; want the successor's answer", a.next, a.closing)
		}
	}
	t.Logf("%d of %d connections moved after their answer", moved, clients)
	g1.stop(t)
	for _, c := range conns {
		c.Close()
	}
	g2.stop(t)
}

// TestMigrateHTTPLongHeader: a request whose header comes in two parts,
// the first leaving 4,095 bytes of a line in net/http's reader, is read on
// at a takeover: the one-byte read that follows is not net/http's
// background read, and must not wait for the quiesce to end.
func TestMigrateHTTPLongHeader(t *testing.T) {
	restartCheckLeaks(t)
	const quiesce = 20 * time.Second
	path := filepath.Join(t.TempDir(), "h.sock")
	g1 := startHTTPGenQuiesce(t, path, false, quiesce)
	c, err := net.Dial("tcp", g1.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	// The request line (17 bytes) and 4,095 bytes of an unfinished header
	// line: net/http reads 4,096, then the 16 left, then asks for the one
	// byte its reader has room for.
	if _, err := io.WriteString(c, "GET /a HTTP/1.1\r\nX: "+strings.Repeat("a", 4092)); err != nil {
		t.Fatal(err)
	}
	awaitServerRead(t, c) // the server waits for the rest: the connection is busy
	g2 := startHTTPGen(t, path)
	<-g1.p.Exit()
	start := time.Now()
	if _, err := io.WriteString(c, "a\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	body, closing := httpExchange(t, c, bufio.NewReader(c), "")
	if took := time.Since(start); body != "gen=1 /a" || took > quiesce/2 {
		t.Errorf("the rest of a long header: %q after %v (Connection: close %v), want gen 1's answer at once", body, took, closing)
	}
	c.Close()
	g1.stop(t)
	g2.stop(t)
}

// awaitServerRead polls until the server end of c, in this process, has
// nothing left to read.
func awaitServerRead(t *testing.T, c net.Conn) {
	t.Helper()
	local := c.LocalAddr().(*net.TCPAddr)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			n, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			peer, err := unix.Getpeername(n)
			if sa, ok := peer.(*unix.SockaddrInet4); err != nil || !ok || sa.Port != local.Port {
				continue
			}
			if inq, err := unix.IoctlGetInt(n, unix.SIOCINQ); err == nil && inq == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not read what the client sent within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestMigrateHTTPBeforeServe: connections that migrate in before the
// successor's Serve runs are served once it does, and so are new ones.
func TestMigrateHTTPBeforeServe(t *testing.T) {
	restartCheckLeaks(t)
	path := filepath.Join(t.TempDir(), "h.sock")
	g1 := startHTTPGen(t, path)
	addr := g1.ln.Addr().String()
	get := func(p string) string { return "GET " + p + " HTTP/1.1\r\nHost: x\r\n\r\n" }
	var conns []net.Conn
	var readers []*bufio.Reader
	for i := range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		if body, _ := httpExchange(t, c, r, get(fmt.Sprint("/a", i))); body != fmt.Sprintf("gen=1 /a%d", i) {
			t.Fatalf("connection %d: %q", i, body)
		}
		conns, readers = append(conns, c), append(readers, r)
	}
	g2 := startHTTPGenServing(t, path, true)
	<-g1.p.Exit()
	for i, c := range conns {
		if body, _ := httpExchange(t, c, readers[i], get(fmt.Sprint("/b", i))); body != fmt.Sprintf("gen=2 /b%d", i) {
			t.Errorf("connection %d after the takeover: %q", i, body)
		}
	}
	g1.stop(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if body, _ := httpExchange(t, c, bufio.NewReader(c), get("/new")); body != "gen=2 /new" {
		t.Errorf("a new connection: %q", body)
	}
	for _, c := range conns {
		c.Close()
	}
	c.Close()
	g2.stop(t)
}

// startHTTPGenServing starts a generation that calls Serve before Ready,
// or (serveAfterReady) only once Ready has returned, as a goroutine that
// has not run yet by then does.
func startHTTPGenServing(t *testing.T, path string, serveAfterReady bool) *httpGen {
	t.Helper()
	// The connection that stays holds the migration up this long.
	return startHTTPGenQuiesce(t, path, serveAfterReady, time.Second)
}

// startHTTPGenQuiesce is startHTTPGenServing with Options.QuiesceTimeout
// quiesce.
func startHTTPGenQuiesce(t *testing.T, path string, serveAfterReady bool, quiesce time.Duration) *httpGen {
	t.Helper()
	p, err := graceful.New(graceful.Options{Path: path, Timeout: 10 * time.Second, Migrate: true, QuiesceTimeout: quiesce})
	if err != nil {
		t.Fatal(err)
	}
	g := &httpGen{p: p, served: make(chan error, 1), release: make(chan struct{}), blocked: make(chan struct{}, 1)}
	gen := p.Generation()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			io.Copy(io.Discard, r.Body) // a POST's body, read whole
			g.blocked <- struct{}{}
			<-g.release
		}
		fmt.Fprintf(w, "gen=%d %s", gen, r.URL.Path)
	})}
	g.hs = p.HTTP(srv)
	if g.ln, err = p.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if !serveAfterReady {
		go func() { g.served <- g.hs.Serve(g.ln) }()
	}
	if err := p.Ready(); err != nil {
		t.Fatal(err)
	}
	if serveAfterReady {
		go func() { g.served <- g.hs.Serve(g.ln) }()
	}
	return g
}

// TestHTTPServeAfterDrain: a Serve that starts after Drain (its goroutine
// ran late) returns http.ErrServerClosed and closes its listener, as
// net/http's Serve after Shutdown: it served on, unseen by the Drain that
// had returned, and the process never ended.
func TestHTTPServeAfterDrain(t *testing.T) {
	restartCheckLeaks(t)
	p, err := graceful.New(graceful.Options{Path: filepath.Join(t.TempDir(), "h.sock"), Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	hs := p.HTTP(&http.Server{})
	if err := hs.Drain(context.Background()); err != nil {
		t.Fatalf("Drain with nothing served: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	select {
	case err := <-served:
		if !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve after Drain = %v, want http.ErrServerClosed", err)
		}
	case <-time.After(10 * time.Second):
		ln.Close()
		<-served
		t.Fatal("Serve after Drain still served 10 s later")
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Error("the listener Serve was given after Drain still accepts")
	}
}
