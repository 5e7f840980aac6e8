//go:build linux

package graceful_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/unixmsg"
)

// lineServer is one generation of a line service on a Process: each line
// is answered with "<name> <count> <line> <gen>", where count numbers the
// session's lines; the session state (name, count) migrates.
type lineServer struct {
	p   *graceful.Process
	gen int
	wg  sync.WaitGroup
}

type session struct {
	name  string
	count int
}

func (s session) encode() []byte { return fmt.Appendf(nil, "%s %d", s.name, s.count) }

func decodeSession(b []byte) (session, error) {
	name, n, ok := strings.Cut(string(b), " ")
	count, err := strconv.Atoi(n)
	if !ok || err != nil {
		return session{}, fmt.Errorf("bad state %q", b)
	}
	return session{name: name, count: count}, nil
}

func (ls *lineServer) serve(c *graceful.Conn, s session) {
	ls.wg.Go(func() {
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if errors.Is(err, graceful.ErrMigrating) {
				if c.HandoffReader(s.encode(), r, []byte(line)) {
					return
				}
				continue
			}
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\n")
			if name, ok := strings.CutPrefix(line, "NICK "); ok {
				s.name = name
				continue
			}
			s.count++
			if _, err := fmt.Fprintf(c, "%s %d %s %d\n", s.name, s.count, line, ls.gen); err != nil {
				return
			}
		}
	})
}

// startLineServer starts a generation on path: it adopts the listener,
// takes the migrated connections (checking them with migrated, if set),
// and serves.
func startLineServer(t *testing.T, path string, migrated func([]*graceful.Conn) error) (*lineServer, net.Listener) {
	t.Helper()
	p, err := graceful.New(graceful.Options{Path: path, Timeout: 10 * time.Second, Migrate: true, Migrated: migrated})
	if err != nil {
		t.Fatal(err)
	}
	ls := &lineServer{p: p, gen: int(p.Generation())}
	ln, err := p.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ls.serve(p.Track(c), session{name: "anon"})
		}
	})
	if err := p.Ready(); err != nil {
		ln.Close()
		ls.wg.Wait()
		p.Close()
		t.Fatal(err)
	}
	for _, c := range p.MigratedConns() {
		s, err := decodeSession(c.State())
		if err != nil {
			t.Error(err)
		}
		ls.serve(c, s)
	}
	return ls, ln
}

// lineClient talks to a line server and checks every answer.
type lineClient struct {
	c     net.Conn
	r     *bufio.Reader
	name  string
	count int
}

func dialLine(t *testing.T, addr, name string) *lineClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(c, "NICK %s\n", name); err != nil {
		t.Fatal(err)
	}
	return &lineClient{c: c, r: bufio.NewReader(c), name: name}
}

// roundTrip sends a line in two writes (so that the server may see half
// of it) and checks the answer; it returns the generation that answered.
func (lc *lineClient) roundTrip(seq int) (int, error) {
	msg := fmt.Sprintf("msg-%d\n", seq)
	if _, err := io.WriteString(lc.c, msg[:3]); err != nil {
		return 0, err
	}
	if _, err := io.WriteString(lc.c, msg[3:]); err != nil {
		return 0, err
	}
	lc.count++
	return lc.check(fmt.Sprintf("msg-%d", seq))
}

func (lc *lineClient) check(want string) (int, error) {
	line, err := lc.r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	f := strings.Fields(line)
	if len(f) != 4 || f[0] != lc.name || f[1] != strconv.Itoa(lc.count) || f[2] != want {
		return 0, fmt.Errorf("answer %q, want %s %d %s", line, lc.name, lc.count, want)
	}
	return strconv.Atoi(f[3])
}

// TestMigrateInProcess moves established connections between two
// Processes of one process: sessions, half-read lines and pipelined lines
// survive, and nothing leaks.
func TestMigrateInProcess(t *testing.T) {
	restartCheckLeaks(t)
	path := filepath.Join(t.TempDir(), "h.sock")
	ls1, ln1 := startLineServer(t, path, nil)
	addr := ln1.Addr().String()
	var clients []*lineClient
	for i := range 20 {
		lc := dialLine(t, addr, fmt.Sprintf("c%d", i))
		defer lc.c.Close()
		if g, err := lc.roundTrip(0); err != nil || g != 1 {
			t.Fatalf("client %d: generation %d, %v", i, g, err)
		}
		clients = append(clients, lc)
	}
	// Half a line and a whole pipelined one wait in the server's buffers
	// or the socket when the takeover comes.
	half := clients[0]
	io.WriteString(half.c, "half-")
	pipe := clients[1]
	io.WriteString(pipe.c, "p1\np2\n")
	pipe.count++
	if _, err := pipe.check("p1"); err != nil {
		t.Fatal(err)
	}
	pipe.count++
	if _, err := pipe.check("p2"); err != nil {
		t.Fatal(err)
	}
	io.WriteString(pipe.c, "p3\n")

	ls2, ln2 := startLineServer(t, path, nil)
	<-ls1.p.Exit()
	ln1.Close()
	ls1.wg.Wait() // every reader handed over
	ls1.p.Close()

	io.WriteString(half.c, "done\n")
	half.count++
	if g, err := half.check("half-done"); err != nil || g != 2 {
		t.Errorf("half line: generation %d, %v", g, err)
	}
	pipe.count++
	if _, err := pipe.check("p3"); err != nil { // answered by either
		t.Errorf("pipelined line: %v", err)
	}
	for i, lc := range clients {
		if g, err := lc.roundTrip(1); err != nil || g != 2 {
			t.Errorf("client %d after the takeover: generation %d, %v", i, g, err)
		}
	}
	for _, lc := range clients {
		lc.c.Close()
	}
	ln2.Close()
	ls2.wg.Wait()
	ls2.p.Close()
}

// TestMigrateRefused: a successor that refuses the connections fails its
// takeover; the predecessor resumes them all and keeps serving, and the
// next successor takes them.
func TestMigrateRefused(t *testing.T) {
	restartCheckLeaks(t)
	path := filepath.Join(t.TempDir(), "h.sock")
	ls1, ln1 := startLineServer(t, path, nil)
	addr := ln1.Addr().String()
	var clients []*lineClient
	for i := range 10 {
		lc := dialLine(t, addr, fmt.Sprintf("c%d", i))
		defer lc.c.Close()
		if _, err := lc.roundTrip(0); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, lc)
	}
	io.WriteString(clients[0].c, "half-")

	p, err := graceful.New(graceful.Options{Path: path, Timeout: 10 * time.Second, Migrate: true,
		Migrated: func(cs []*graceful.Conn) error {
			if len(cs) != len(clients) {
				t.Errorf("offered %d connections, want %d", len(cs), len(clients))
			}
			return errors.New("no thanks")
		}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := p.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Ready(); !errors.Is(err, graceful.ErrHandoff) {
		t.Errorf("Ready of a successor that refused: %v, want ErrHandoff", err)
	}
	ln.Close()
	p.Close()
	if ls1.p.HandedOff() {
		t.Fatal("handed off though the successor refused the connections")
	}
	io.WriteString(clients[0].c, "done\n")
	clients[0].count++
	if g, err := clients[0].check("half-done"); err != nil || g != 1 {
		t.Errorf("half line after the rollback: generation %d, %v", g, err)
	}
	for i, lc := range clients {
		if g, err := lc.roundTrip(1); err != nil || g != 1 {
			t.Errorf("client %d after the rollback: generation %d, %v", i, g, err)
		}
	}
	ls2, ln2 := startLineServer(t, path, nil)
	<-ls1.p.Exit()
	ln1.Close()
	ls1.wg.Wait()
	ls1.p.Close()
	for i, lc := range clients {
		if g, err := lc.roundTrip(2); err != nil || g != 2 {
			t.Errorf("client %d after the takeover: generation %d, %v", i, g, err)
		}
	}
	for _, lc := range clients {
		lc.c.Close()
	}
	ln2.Close()
	ls2.wg.Wait()
	ls2.p.Close()
}

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

// startHTTPGenServing starts a generation that calls Serve before Ready,
// or (serveAfterReady) only once Ready has returned, as a goroutine that
// has not run yet by then does.
func startHTTPGenServing(t *testing.T, path string, serveAfterReady bool) *httpGen {
	t.Helper()
	// The connection that stays holds the migration up this long.
	p, err := graceful.New(graceful.Options{Path: path, Timeout: 10 * time.Second, Migrate: true, QuiesceTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	g := &httpGen{p: p, served: make(chan error, 1), release: make(chan struct{}), blocked: make(chan struct{}, 1)}
	gen := p.Generation()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
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

// stop drains a generation that was taken over.
func (g *httpGen) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.hs.Drain(ctx); err != nil {
		t.Errorf("drain: %v", err)
	}
	if err := <-g.served; !errors.Is(err, net.ErrClosed) {
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
// the first bytes of a pipelined request stays and ends cleanly after
// answering it. No byte is lost.
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
	// its first bytes, which answers and closes.
	body, closing := httpExchange(t, partial, partialR, "T /p2 HTTP/1.1\r\nHost: x\r\n\r\n")
	if body != "gen=1 /p2" || !closing {
		t.Errorf("pipelined request: %q, Connection: close %v", body, closing)
	}
	if _, err := partialR.ReadByte(); err != io.EOF {
		t.Errorf("after Connection: close: %v, want EOF", err)
	}
	g1.stop(t)
	idle.Close()
	busy.Close()
	g2.ln.Close()
	g2.stop(t)
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
	g2.ln.Close()
	g2.stop(t)
}

// migrateOffer builds an OFFER batch that agrees to migration (and to
// streamed CONNS batches with stream): tcp as the listener, self as the
// handoff listener.
func migrateOffer(t *testing.T, self *net.UnixListener, tcp net.Listener, stream bool) *unixmsg.Batch {
	b := new(unixmsg.Batch)
	if err := b.Add("0", tcp, unixmsg.MetaOf("role", "listener", "network", "tcp", "addr", "127.0.0.1:0"), nil); err != nil {
		t.Error(err)
	}
	if err := b.Add("1", self, unixmsg.MetaOf("role", "handoff", "network", "unixpacket"), nil); err != nil {
		t.Error(err)
	}
	features := uint32(graceful.FeatureMigrate)
	if stream {
		features |= graceful.FeatureStreamConns
	}
	payload, _ := graceful.AppendMessage(nil, graceful.Message{Type: graceful.MsgOffer, Version: 1, Features: features, Items: 2, Generation: 7})
	b.SetPayload(payload)
	return b
}

// connPayload lays out a CONNS item's payload.
func connPayload(state, buffered string) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(state)))
	return append(append(b, state...), buffered...)
}

// TestMigrateHostilePredecessor: a predecessor that breaks the migration
// phase leaves the successor with an error and not one descriptor more.
func TestMigrateHostilePredecessor(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	client, err := net.Dial("tcp", tcp.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := tcp.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	conns := func(items, total uint32, add func(b *unixmsg.Batch)) *unixmsg.Batch {
		b := new(unixmsg.Batch)
		add(b)
		payload, _ := graceful.AppendMessage(nil, graceful.Message{Type: graceful.MsgConns, Items: items, Total: total})
		b.SetPayload(payload)
		return b
	}
	oneConn := func(payload []byte) func(b *unixmsg.Batch) {
		return func(b *unixmsg.Batch) {
			if err := b.Add("0", server, unixmsg.MetaOf("role", "conn", "network", "tcp"), payload); err != nil {
				t.Error(err)
			}
		}
	}
	one := func(total uint32) *unixmsg.Batch { return conns(1, total, oneConn(connPayload("s", ""))) }
	for _, tc := range []struct {
		name   string
		stream bool                    // the OFFER agrees to streamed CONNS
		phase  func() []*unixmsg.Batch // sent after READY; then the fake hangs up
		want   error
	}{
		{"count", false, func() []*unixmsg.Batch { return []*unixmsg.Batch{conns(2, 2, oneConn(connPayload("s", "")))} }, graceful.ErrMalformed},
		{"listener", false, func() []*unixmsg.Batch {
			return []*unixmsg.Batch{conns(1, 1, func(b *unixmsg.Batch) { b.Add("0", tcp, nil, connPayload("", "")) })}
		}, graceful.ErrMalformed},
		{"payload", false, func() []*unixmsg.Batch { return []*unixmsg.Batch{conns(1, 1, oneConn([]byte{9, 0}))} }, graceful.ErrMalformed},
		{"state length", false, func() []*unixmsg.Batch { return []*unixmsg.Batch{conns(1, 1, oneConn([]byte{9, 0, 0, 0, 'x'}))} }, graceful.ErrMalformed},
		{"total changes", false, func() []*unixmsg.Batch {
			return []*unixmsg.Batch{conns(1, 3, oneConn(connPayload("", ""))), conns(1, 2, oneConn(connPayload("", "")))}
		}, graceful.ErrMalformed},
		{"hang up midway", false, func() []*unixmsg.Batch { return []*unixmsg.Batch{conns(1, 2, oneConn(connPayload("s", "b")))} }, graceful.ErrHandoff},
		{"no DONE", false, func() []*unixmsg.Batch { return []*unixmsg.Batch{conns(1, 1, oneConn(connPayload("s", "b")))} }, graceful.ErrHandoff},
		{"more without streaming", false, func() []*unixmsg.Batch { return []*unixmsg.Batch{one(graceful.ConnsMore)} }, graceful.ErrMalformed},
		{"streamed, last short", true, func() []*unixmsg.Batch { return []*unixmsg.Batch{one(graceful.ConnsMore), one(3)} }, graceful.ErrMalformed},
		{"streamed, last over", true, func() []*unixmsg.Batch { return []*unixmsg.Batch{one(graceful.ConnsMore), one(1)} }, graceful.ErrMalformed},
		{"streamed, hang up midway", true, func() []*unixmsg.Batch { return []*unixmsg.Batch{one(graceful.ConnsMore), one(graceful.ConnsMore)} }, graceful.ErrHandoff},
		{"streamed, no DONE", true, func() []*unixmsg.Batch { return []*unixmsg.Batch{one(graceful.ConnsMore), one(2)} }, graceful.ErrHandoff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			restartCheckLeaks(t)
			phase := tc.phase()
			defer func() {
				for _, b := range phase {
					b.Close()
				}
			}()
			path := filepath.Join(t.TempDir(), "h.sock")
			done := fakePredecessor(t, path, func(c *unixmsg.Conn, self *net.UnixListener) error {
				offer := migrateOffer(t, self, tcp, tc.stream)
				defer offer.Close()
				if err := c.Send(offer); err != nil {
					return err
				}
				b, err := c.Receive()
				if err != nil {
					return err
				}
				m, _ := graceful.ParseMessage(b.Payload())
				b.Close()
				if m.Type != graceful.MsgReady || m.Features&graceful.FeatureMigrate == 0 {
					return fmt.Errorf("got %+v, want READY asking for migration", m)
				}
				if streams := m.Features&graceful.FeatureStreamConns != 0; streams != tc.stream {
					t.Errorf("READY %+v asks for streamed batches: %v, want %v", m, streams, tc.stream)
				}
				for _, b := range phase {
					if err := c.Send(b); err != nil {
						return err
					}
				}
				if strings.HasSuffix(tc.name, "no DONE") {
					// ADOPTED, then hang up.
					b, err := c.Receive()
					if err != nil {
						return err
					}
					m, _ := graceful.ParseMessage(b.Payload())
					b.Close()
					if want := 1 + btoi(tc.stream); m.Type != graceful.MsgAdopted || int(m.Items) != want {
						t.Errorf("got %+v, want ADOPTED of %d", m, want)
					}
				}
				return nil
			})
			p, err := graceful.New(graceful.Options{Path: path, Timeout: 5 * time.Second, Migrate: true})
			if err != nil {
				t.Fatal(err)
			}
			ln, err := p.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ln.Close()
			err = p.Ready()
			if !errors.Is(err, graceful.ErrHandoff) || !errors.Is(err, tc.want) {
				t.Errorf("Ready: %v, want %v", err, tc.want)
			}
			if tc.want == graceful.ErrHandoff && errors.Is(err, graceful.ErrMalformed) {
				t.Errorf("Ready: %v, want no ErrMalformed: the batches were well formed", err)
			}
			if cs := p.MigratedConns(); len(cs) != 0 {
				t.Errorf("%d connections adopted after a failed migration", len(cs))
			}
			p.Close()
			// A successor that refused a batch may have hung up on the
			// fake's next; one that got well-formed batches may not.
			if err := <-done; err != nil && tc.want == graceful.ErrHandoff {
				t.Errorf("fake predecessor: %v", err)
			}
		})
	}
	// The connection the fake offered is alive and untouched.
	io.WriteString(client, "ping\n")
	buf := make([]byte, 5)
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "ping\n" {
		t.Errorf("offered connection after the failures: %q, %v", buf, err)
	}
}

// TestMigrateHostileSuccessor: a successor that acknowledges the wrong
// number of connections, or hangs up in the middle of the phase, fails
// the handoff; the predecessor resumes every connection and keeps
// serving.
func TestMigrateHostileSuccessor(t *testing.T) {
	for _, tc := range []string{"wrong count", "hang up"} {
		t.Run(tc, func(t *testing.T) {
			restartCheckLeaks(t)
			path := filepath.Join(t.TempDir(), "h.sock")
			ls, ln := startLineServer(t, path, nil)
			var clients []*lineClient
			for i := range 5 {
				lc := dialLine(t, ln.Addr().String(), fmt.Sprintf("c%d", i))
				defer lc.c.Close()
				if _, err := lc.roundTrip(0); err != nil {
					t.Fatal(err)
				}
				clients = append(clients, lc)
			}
			io.WriteString(clients[0].c, "half-")

			c, err := unixmsg.Dial("unixpacket", path, &unixmsg.Options{NoAck: true})
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			send := func(m graceful.Message) {
				var b unixmsg.Batch
				b.SetPayload(mustAppend(t, m))
				if err := c.Send(&b); err != nil {
					t.Fatal(err)
				}
			}
			send(graceful.Message{Type: graceful.MsgHello, MinVersion: 1, MaxVersion: 1, Features: graceful.FeatureMigrate})
			offer, err := c.Receive()
			if err != nil {
				t.Fatal(err)
			}
			m, _ := graceful.ParseMessage(offer.Payload())
			offer.Close()
			if m.Features&graceful.FeatureMigrate == 0 {
				t.Fatalf("OFFER %+v does not agree to migrate", m)
			}
			send(graceful.Message{Type: graceful.MsgReady, Features: graceful.FeatureMigrate})
			b, err := c.Receive()
			if err != nil {
				t.Fatal(err)
			}
			m, _ = graceful.ParseMessage(b.Payload())
			if m.Type != graceful.MsgConns || m.Total != uint32(len(clients)) || b.Len() != len(clients) {
				t.Errorf("got %+v with %d descriptors, want CONNS of %d", m, b.Len(), len(clients))
			}
			b.Close()
			if tc == "wrong count" {
				send(graceful.Message{Type: graceful.MsgAdopted, Items: m.Total - 1})
				r, err := c.Receive()
				if err == nil {
					m, _ = graceful.ParseMessage(r.Payload())
					r.Close()
				}
				if err != nil || m.Type != graceful.MsgError {
					t.Errorf("after a wrong ADOPTED: %+v, %v; want ERROR", m, err)
				}
			}
			c.Close()
			// Rolled back: every session carries on with generation 1, the
			// half line included.
			io.WriteString(clients[0].c, "done\n")
			clients[0].count++
			if g, err := clients[0].check("half-done"); err != nil || g != 1 {
				t.Errorf("half line after the rollback: generation %d, %v", g, err)
			}
			for i, lc := range clients {
				if g, err := lc.roundTrip(1); err != nil || g != 1 {
					t.Errorf("client %d after the rollback: generation %d, %v", i, g, err)
				}
			}
			if ls.p.HandedOff() {
				t.Error("handed off to a successor that failed the migration")
			}
			for _, lc := range clients {
				lc.c.Close()
			}
			ln.Close()
			ls.wg.Wait()
			ls.p.Close()
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
