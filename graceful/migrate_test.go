//go:build linux

package graceful_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fdpass/fdpass/graceful"
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
	conns, err := p.MigratedConns()
	if err != nil {
		p.Close()
		t.Fatal(err)
	}
	for _, c := range conns {
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
