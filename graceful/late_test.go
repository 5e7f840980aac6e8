//go:build linux

package graceful_test

import (
	"bufio"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// slowClient is a keep-alive connection with one slow request in hand.
type slowClient struct {
	c    net.Conn
	r    *bufio.Reader
	done chan error // the slow request's outcome
	gen  string
	shut bool // its answer said Connection: close
}

// startSlow sends GET /slow?ms=ms&exit=1 on a new connection to addr
// (answered ms after the takeover), once a request has told which
// generation answers, and returns at once.
func startSlow(t *testing.T, addr string, ms int) *slowClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	s := &slowClient{c: c, r: bufio.NewReader(c), done: make(chan error, 1)}
	if _, _, err := h1Get(c, s.r, "/"); err != nil {
		t.Fatal(err)
	}
	go func() {
		var err error
		s.gen, s.shut, err = h1Get(c, s.r, fmt.Sprintf("/slow?ms=%d&exit=1", ms))
		s.done <- err
	}()
	return s
}

// TestLateMigration: a connection whose request is in hand at the
// takeover, and for a while after it, holds no other up. The idle and
// quick connections move at once (the slowest request from the
// successor's READY on stays far below the slow one's 2 s after it;
// waiting for it, they would wait that long); the slow one finishes with its
// generation, without "Connection: close", and moves after it: its next
// request, on the same connection, is the successor's.
func TestLateMigration(t *testing.T) {
	const clients, slowMS = 8, 2000
	restartCheckLeaks(t)
	dir := t.TempDir()
	g := startHTTPGens(t, httpGenEnv(dir, 5*time.Second))
	l := newLoad()
	defer l.halt()
	l.h1Clients(g.addr, clients, 0, "/", 2*time.Millisecond, nil)
	l.allAt(t, clients, 1)
	for range 2 {
		s := startSlow(t, g.addr, slowMS)
		g.current.expect(fmt.Sprintf("slow-start gen=%d", g.gen))
		before := l.window()
		start := time.Now()
		prev, ready := g.takeover()
		l.window() // the slowest request from READY on
		l.allAt(t, clients, g.gen)
		moved := time.Since(start)
		st := l.window()
		t.Logf("takeover to gen %d: ready after %v, every client moved after %v; %v", g.gen, ready.Round(time.Millisecond), moved.Round(time.Millisecond), st)
		if st.slowest > slowMS*time.Millisecond/2 {
			t.Errorf("takeover to gen %d: a request took %v: it waited for the slow one", g.gen, st.slowest)
		}
		if m := st.migrated - before.migrated; m != clients {
			t.Errorf("takeover to gen %d: %d connections migrated, want %d", g.gen, m, clients)
		}
		if err := <-s.done; err != nil || s.gen != fmt.Sprint(g.gen-1) || s.shut {
			t.Fatalf("slow request: generation %s, Connection: close %v, %v; want generation %d, kept alive", s.gen, s.shut, err, g.gen-1)
		}
		// A request the client sends at once may reach the predecessor
		// while it still reads the connection (net/http's background read
		// takes its first byte): the predecessor answers it, keeping the
		// connection, and hands it over at the next boundary.
		for n := 1; ; n++ {
			gen, shut, err := h1Get(s.c, s.r, "/")
			if err != nil || shut || (gen != fmt.Sprint(g.gen) && gen != fmt.Sprint(g.gen-1)) {
				t.Fatalf("the slow connection's request %d after the slow one: generation %s, Connection: close %v, %v; want %d on the same connection", n, gen, shut, err, g.gen)
			}
			if gen == fmt.Sprint(g.gen) {
				break
			}
			if n == 20 {
				t.Fatalf("the slow connection did not move in %d requests", n)
			}
		}
		if lines := prev.rest(); !saidAll(lines, "connections moved after the takeover", "drained") {
			t.Errorf("takeover to gen %d: the predecessor did not move the slow connection late, or did not drain: %q", g.gen, lines)
		}
		prev.mustExit()
	}
	if st := l.halt(); st.failed != 0 {
		t.Errorf("%d requests failed: %q", st.failed, st.errs)
	}
}

// TestLateRefused: a successor that refuses a connection coming late (its
// Options.Migrated refuses every LATE batch) leaves it with the
// predecessor, which answers its next request with "Connection: close";
// nothing fails. (MaxMigrated no longer refuses: the successor says it in
// CAPACITY, and the predecessor sends no more.)
func TestLateRefused(t *testing.T) {
	g, l, s, prev := takeoverWithSlow(t, envHTTPNoLate+"=1", 100)
	defer l.halt()
	g.current.expect("connections after the takeover stay with the predecessor")
	gen, shut, err := h1Get(s.c, s.r, "/")
	if err != nil || gen != "1" || !shut {
		t.Errorf("the refused connection's next request: generation %s, Connection: close %v, %v; want 1, true", gen, shut, err)
	}
	if lines := prev.rest(); !saidAll(lines, "connections stay after a failed late migration", "drained") {
		t.Errorf("the predecessor did not keep the refused connection, or did not drain: %q", lines)
	}
	prev.mustExit()
	if st := l.halt(); st.failed != 0 {
		t.Errorf("%d requests failed: %q", st.failed, st.errs)
	}
}

// lateClients is how many quick keep-alive clients takeoverWithSlow runs.
const lateClients = 4

// takeoverWithSlow starts an HTTP generation with env, lateClients quick
// keep-alive clients and a slow request of ms, and has a successor take
// over while the slow request is in hand; it returns once the quick
// clients are answered by the successor and the slow request by the
// predecessor.
func takeoverWithSlow(t *testing.T, env string, ms int) (*httpGens, *load, *slowClient, *restartChild) {
	t.Helper()
	restartCheckLeaks(t)
	g := startHTTPGens(t, httpGenEnv(t.TempDir(), 5*time.Second, env))
	l := newLoad()
	t.Cleanup(func() { l.halt() })
	l.h1Clients(g.addr, lateClients, 0, "/", 2*time.Millisecond, nil)
	l.allAt(t, lateClients, 1)
	s := startSlow(t, g.addr, ms)
	g.current.expect("slow-start gen=1")
	prev, _ := g.takeover()
	l.allAt(t, lateClients, 2)
	if err := <-s.done; err != nil || s.gen != "1" {
		t.Fatalf("slow request: generation %s, %v", s.gen, err)
	}
	return g, l, s, prev
}

// saidAll reports whether lines contain each of substrs.
func saidAll(lines []string, substrs ...string) bool {
	for _, sub := range substrs {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, sub) }) {
			return false
		}
	}
	return true
}

// TestCapacityLeavesBusy: a successor that takes fewer connections than
// the predecessor holds (MaxMigrated, said in CAPACITY) gets those whose
// readers wait for the next request first; the slow request's connection
// (unless a quick one was busy too at that moment) stays with the
// predecessor, which answers it, then its next request with "Connection:
// close". Nothing fails, whichever stayed.
func TestCapacityLeavesBusy(t *testing.T) {
	_, l, s, prev := takeoverWithSlow(t, fmt.Sprintf("%s=%d", envHTTPMaxMig, lateClients), 300)
	defer l.halt()
	gen, shut, err := h1Get(s.c, s.r, "/")
	if err != nil || (gen != "1" || !shut) && gen != "2" {
		t.Errorf("the slow connection's next request: generation %s, Connection: close %v, %v; want 1 and close, or 2", gen, shut, err)
	}
	t.Logf("the slow connection's next request: generation %s, Connection: close %v", gen, shut)
	if lines := prev.rest(); !saidAll(lines, "the successor takes only some connections", "drained") {
		t.Errorf("the predecessor did not say it kept connections, or did not drain: %q", lines)
	}
	prev.mustExit()
	if st := l.halt(); st.failed != 0 {
		t.Errorf("%d requests failed: %q", st.failed, st.errs)
	}
}
