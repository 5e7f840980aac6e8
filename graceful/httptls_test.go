//go:build linux

package graceful_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestTLSTakeovers: HTTPS through a tls.NewListener given to Serve. TLS
// connections do not migrate (a TLS connection holds state net/http
// cannot hand over); at a takeover an HTTP/1.1 one finishes the response
// in hand, or its next, with "Connection: close", and an HTTP/2 one (h2
// over ALPN) gets GOAWAY. The takeover does not wait for them, no request
// that ends after READY took more than slowBound, no request fails or is
// retried, and each strict HTTP/1.1 client is closed once per takeover by
// the generation taken over (a connection it dials as that generation
// stops accepting may be that generation's again, and closed again: that
// is counted apart, and allowed).
func TestTLSTakeovers(t *testing.T) {
	const h1, goH1, goH2, takeovers = 4, 2, 2, 10
	const quiesce = 5 * time.Second
	restartCheckLeaks(t)
	dir := t.TempDir()
	roots := selfSigned(t, dir)
	g := startHTTPGens(t, httpGenEnv(dir, quiesce, envHTTPTLS+"="+dir))
	l := newLoad()
	defer l.halt()
	dial := func() (net.Conn, error) {
		return tls.Dial("tcp", g.addr, &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}})
	}
	l.h1Clients(g.addr, h1, 0, "/", 2*time.Millisecond, dial)
	url := "https://" + g.addr + "/"
	l.goClients(tlsTransport(roots, false), url, goH1, h1, 2*time.Millisecond)
	l.goClients(tlsTransport(roots, true), url, goH2, h1+goH1, 2*time.Millisecond)
	const all = h1 + goH1 + goH2
	l.allAt(t, all, 1)
	for range takeovers {
		before := l.window()
		prev, ready := g.takeover()
		l.window() // the slowest request from READY on
		drained := prev.expect(fmt.Sprintf("drained gen=%d", g.gen-1))
		prev.mustExit()
		l.allAt(t, all, g.gen)
		st := l.window()
		t.Logf("takeover to gen %d: ready after %v, predecessor %s; %v", g.gen, ready.Round(time.Millisecond), drained, st)
		if ready > quiesce/2 {
			t.Errorf("takeover to gen %d: successor ready after %v: it waited for TLS connections", g.gen, ready)
		}
		if st.slowest > slowBound {
			t.Errorf("takeover to gen %d: a request ended %v after it was sent, after READY: it stalled", g.gen, st.slowest)
		}
		if m := st.migrated - before.migrated; m != 0 {
			t.Errorf("takeover to gen %d: %d TLS connections migrated", g.gen, m)
		}
		if r := st.redialled - before.redialled; r != h1 {
			t.Errorf("takeover to gen %d: %d strict clients closed with Connection: close, want %d", g.gen, r, h1)
		}
	}
	st := l.halt()
	t.Logf("in all: %v", st)
	if st.failed != 0 {
		t.Errorf("%d requests failed: %q", st.failed, st.errs)
	}
}

// TestWrkTLSTakeovers: wrk, keep-alive HTTPS load from another program,
// across takeovers: no socket error, no status but 200. wrk follows
// "Connection: close" by connecting again. The test needs wrk (Debian:
// apt-get install wrk); without it, it skips, unless FDPASS_REQUIRE_WRK
// is set (CI sets it, and installs wrk).
func TestWrkTLSTakeovers(t *testing.T) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		if os.Getenv("FDPASS_REQUIRE_WRK") != "" {
			t.Fatal("wrk not found, and FDPASS_REQUIRE_WRK is set")
		}
		t.Skip("wrk not found (apt-get install wrk)")
	}
	const takeovers = 10
	dir := t.TempDir()
	roots := selfSigned(t, dir)
	g := startHTTPGens(t, httpGenEnv(dir, 5*time.Second, envHTTPTLS+"="+dir))
	cmd := exec.Command(wrk, "-t2", "-c16", "-d30s", "--latency", "https://"+g.addr+"/")
	out := new(lockedBuffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for range takeovers {
		servedBy(t, g.addr, roots, g.gen, 500)
		prev, _ := g.takeover()
		prev.expect(fmt.Sprintf("drained gen=%d", g.gen-1))
		prev.mustExit()
	}
	servedBy(t, g.addr, roots, g.gen, 500)
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	report := out.String()
	t.Logf("wrk:\n%s", report)
	m := regexp.MustCompile(`(\d+) requests in`).FindStringSubmatch(report)
	if m == nil {
		t.Fatalf("no request count in wrk's report")
	}
	if n, _ := strconv.Atoi(m[1]); n == 0 {
		t.Error("wrk sent no request")
	}
	if regexp.MustCompile(`Socket errors|Non-2xx`).MatchString(report) {
		t.Error("wrk saw errors")
	}
}

// servedBy polls the "/served" count of generation gen at addr over TLS
// until it reaches n.
func servedBy(t *testing.T, addr string, roots *x509.CertPool, gen, n int) {
	t.Helper()
	client := &http.Client{Transport: tlsTransport(roots, false), Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get("https://" + addr + "/served")
		if err == nil {
			var g, count int
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			fmt.Sscanf(string(b), "gen=%d served=%d", &g, &count)
			if g == gen && count >= n {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("generation %d did not serve %d requests: %v", gen, n, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lockedBuffer collects a command's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
