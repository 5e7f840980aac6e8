//go:build linux

package graceful_test

import (
	"fmt"
	"testing"
	"time"
)

// TestHTTP2Takeovers: cleartext HTTP/2 clients (Go's transport, prior
// knowledge) and strict HTTP/1 keep-alive clients on one HTTPServer,
// across takeovers. HTTP/2 connections are not quiesced, so a takeover
// is as fast with them as without (the quiesce timeout is 5 s here, which
// a takeover that waited for them would take); they get GOAWAY at the
// takeover and drain, so the predecessor ends promptly; every HTTP/1
// connection migrates, and no HTTP/1 request that ends after the
// successor's READY took more than slowBound; no request fails or is
// retried.
func TestHTTP2Takeovers(t *testing.T) {
	const h1, h2, takeovers = 8, 4, 10
	const quiesce = 5 * time.Second
	restartCheckLeaks(t)
	dir := t.TempDir()
	g := startHTTPGens(t, httpGenEnv(dir, quiesce))
	l := newLoad()
	defer l.halt()
	l.h1Clients(g.addr, h1, 0, "/", 2*time.Millisecond, nil)
	l.goClients(h2cTransport(), "http://"+g.addr+"/", h2, h1, 2*time.Millisecond)
	l.allAt(t, h1+h2, 1)
	for range takeovers {
		before := l.window()
		prev, ready := g.takeover()
		l.window() // the slowest request from READY on
		prev.expect(fmt.Sprintf("exiting gen=%d", g.gen-1))
		drained := prev.expect(fmt.Sprintf("drained gen=%d", g.gen-1))
		prev.mustExit()
		l.allAt(t, h1+h2, g.gen)
		st := l.window()
		t.Logf("takeover to gen %d: successor ready after %v, predecessor %s; %v", g.gen, ready.Round(time.Millisecond), drained, st)
		if ready > quiesce/2 {
			t.Errorf("takeover to gen %d: successor ready after %v: it waited for connections", g.gen, ready)
		}
		if took, err := time.ParseDuration(field(drained, "took")); err != nil || took > 3*time.Second {
			t.Errorf("takeover to gen %d: %s: HTTP/2 connections did not drain", g.gen, drained)
		}
		if st.slowestH1 > slowBound {
			t.Errorf("takeover to gen %d: an HTTP/1 request ended %v after it was sent, after READY", g.gen, st.slowestH1)
		}
		if m := st.migrated - before.migrated; m != h1 {
			t.Errorf("takeover to gen %d: %d HTTP/1 connections migrated, want %d", g.gen, m, h1)
		}
	}
	st := l.halt()
	t.Logf("in all: %v", st)
	if st.failed != 0 {
		t.Errorf("%d requests failed: %q", st.failed, st.errs)
	}
}

// slowBound bounds the slowest request of a migrating HTTP/1 client across
// a takeover in the tests, which run under the race detector on a loaded
// machine; BenchmarkHTTPTakeover measures it without.
const slowBound = time.Second
