//go:build linux

package graceful_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Clients for the HTTP tests, each counting every failure: a strict
// HTTP/1.1 keep-alive client that never retries, and Go's own transports
// (HTTP/1, HTTP/2, TLS) with every retry and new connection counted.

// loadStats are what a load saw. A retry is a failure: Go's transports
// send a request again on another connection, unasked, when the first
// broke before an answer (or refused its stream); a request they wrote
// more than once counts as retried (httptrace WroteHeaders). A request for
// which the transport took a connection, found it closing (GOAWAY) before
// it wrote anything and took another counts as repicked, not a failure.
type loadStats struct {
	ok, failed, retried, dials int64
	repicked                   int64
	migrated, redialled        int64 // strict HTTP/1 clients: same connection, new answerer; or Connection: close from a generation not seen closing before
	reclosed                   int64 // Connection: close again from the generation that closed the client's last connection
	slowest                    time.Duration
	slowestH1                  time.Duration // of the strict HTTP/1 clients
	errs                       []string
}

func (s loadStats) String() string {
	return fmt.Sprintf("%d ok, %d failed, %d retried, %d repicked, %d dials, %d migrated, %d redialled, %d closed again, slowest %v (HTTP/1 %v)",
		s.ok, s.failed, s.retried, s.repicked, s.dials, s.migrated, s.redialled, s.reclosed, s.slowest.Round(time.Millisecond), s.slowestH1.Round(time.Millisecond))
}

// load runs clients until stop. halt's stats name the slowest requests
// of the whole run.
type load struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	st      loadStats
	peak    [2]time.Duration // the slowest requests of the windows before st's
	lastGen map[int]string   // client -> generation of its last answer
}

func newLoad() *load { return &load{stop: make(chan struct{}), lastGen: map[int]string{}} }

func (l *load) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.failed++
	if len(l.st.errs) < 10 {
		l.st.errs = append(l.st.errs, err.Error())
	}
}

func (l *load) done(client int, gen string, took time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.ok++
	l.st.slowest = max(l.st.slowest, took)
	l.lastGen[client] = gen
}

// window returns the stats so far, with the slowest requests since the
// last window, and starts those afresh.
func (l *load) window() loadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.st
	st.errs = append([]string(nil), st.errs...)
	l.peak = [2]time.Duration{max(l.peak[0], st.slowest), max(l.peak[1], st.slowestH1)}
	l.st.slowest, l.st.slowestH1 = 0, 0
	return st
}

// allAt waits until every client's last answer came from generation gen.
func (l *load) allAt(t testing.TB, clients int, gen int) {
	t.Helper()
	want := fmt.Sprint(gen)
	deadline := time.Now().Add(30 * time.Second)
	for {
		l.mu.Lock()
		n := 0
		for _, g := range l.lastGen {
			if g == want {
				n++
			}
		}
		l.mu.Unlock()
		if n == clients {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d clients answered by generation %d", n, clients, gen)
		}
		time.Sleep(time.Millisecond)
	}
}

func (l *load) halt() loadStats {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
	st := l.window()
	l.mu.Lock()
	st.slowest, st.slowestH1 = l.peak[0], l.peak[1]
	l.mu.Unlock()
	return st
}

func (l *load) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// h1Clients starts n strict keep-alive HTTP/1.1 clients at addr (dial
// opens a connection; nil: TCP), numbered from first, each asking path
// again and again with pause between requests. A client never retries:
// any error, a status other than 200 or an answer without X-Gen fails the
// request; "Connection: close" makes it dial again for the next one.
func (l *load) h1Clients(addr string, n, first int, path string, pause time.Duration, dial func() (net.Conn, error)) {
	if dial == nil {
		dial = func() (net.Conn, error) { return net.Dial("tcp", addr) }
	}
	for i := range n {
		l.h1Client(first+i, dial, pause, func(c net.Conn, r *bufio.Reader) (string, bool, error) {
			return h1Get(c, r, path)
		})
	}
}

// h1Client starts one strict keep-alive HTTP/1.1 client, numbered id, that
// runs exchange on its connection again and again with pause in between;
// exchange returns the generation that answered and whether it closes the
// connection. Any error fails the request; the client never retries, and
// dials again only after "Connection: close".
func (l *load) h1Client(id int, dial func() (net.Conn, error), pause time.Duration, exchange func(net.Conn, *bufio.Reader) (gen string, closing bool, err error)) {
	l.wg.Go(func() {
		var c net.Conn
		var r *bufio.Reader
		prev := ""
		// The generation that last answered "Connection: close": a
		// connection dialled as it stops accepting may be its again,
		// and closed again.
		closedBy := ""
		defer func() {
			if c != nil {
				c.Close()
			}
		}()
		for !l.stopped() {
			start := time.Now()
			if c == nil {
				var err error
				if c, err = dial(); err != nil {
					l.fail(err)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				l.mu.Lock()
				l.st.dials++
				l.mu.Unlock()
				r = bufio.NewReader(c)
				prev = ""
			}
			c.SetDeadline(start.Add(10 * time.Second))
			gen, closing, err := exchange(c, r)
			if err != nil {
				l.fail(fmt.Errorf("client %d: %w", id, err))
				c.Close()
				c = nil
				continue
			}
			took := time.Since(start)
			l.done(id, gen, took)
			l.mu.Lock()
			l.st.slowestH1 = max(l.st.slowestH1, took)
			if prev != "" && gen != prev {
				l.st.migrated++
			}
			if closing {
				if gen != closedBy {
					l.st.redialled++
				} else {
					l.st.reclosed++
				}
			}
			l.mu.Unlock()
			prev = gen
			if closing {
				closedBy = gen
				c.Close()
				c = nil
			}
			time.Sleep(pause)
		}
	})
}

// h1Get sends one GET and reads the answer: the generation that gave it,
// and whether it closes the connection.
func h1Get(c net.Conn, r *bufio.Reader, path string) (gen string, closing bool, err error) {
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path); err != nil {
		return "", false, err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", false, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", false, err
	}
	gen = resp.Header.Get("X-Gen")
	if resp.StatusCode != http.StatusOK || gen == "" {
		return "", false, fmt.Errorf("status %d, X-Gen %q", resp.StatusCode, gen)
	}
	return gen, resp.Close, nil
}

// goClients starts n clients on Go's transport tr (which it takes over:
// its dials are counted), numbered from first, asking url again and again
// with pause between requests. A request that Go's transport sent on more
// than one connection (httptrace GotConn more than once) counts as retried,
// a failure.
func (l *load) goClients(tr *http.Transport, url string, n, first int, pause time.Duration) {
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		l.mu.Lock()
		l.st.dials++
		l.mu.Unlock()
		return d.DialContext(ctx, network, addr)
	}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for i := range n {
		id := first + i
		l.wg.Go(func() {
			defer tr.CloseIdleConnections()
			for !l.stopped() {
				var conns, wrote atomic.Int32
				trace := &httptrace.ClientTrace{
					GotConn:      func(httptrace.GotConnInfo) { conns.Add(1) },
					WroteHeaders: func() { wrote.Add(1) },
				}
				req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", url, nil)
				if err != nil {
					panic(err)
				}
				start := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && (resp.StatusCode != http.StatusOK || resp.Header.Get("X-Gen") == "") {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err == nil && wrote.Load() > 1 {
					l.mu.Lock()
					l.st.retried++
					l.mu.Unlock()
					err = fmt.Errorf("client %d: sent %d times, on %d connections", id, wrote.Load(), conns.Load())
				} else if err == nil && conns.Load() > 1 {
					// The transport picked a connection that had
					// received GOAWAY, and took another before it
					// sent anything: not a retry.
					l.mu.Lock()
					l.st.repicked++
					l.mu.Unlock()
				}
				if err != nil {
					l.fail(fmt.Errorf("client %d: %w", id, err))
					time.Sleep(10 * time.Millisecond)
					continue
				}
				l.done(id, resp.Header.Get("X-Gen"), time.Since(start))
				time.Sleep(pause)
			}
		})
	}
}

// h2cTransport speaks HTTP/2 with prior knowledge over cleartext TCP.
func h2cTransport() *http.Transport {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	return tr
}

// tlsTransport speaks HTTPS, HTTP/2 (h2) or HTTP/1.1 only.
func tlsTransport(roots *x509.CertPool, h2 bool) *http.Transport {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, MaxIdleConnsPerHost: 64}
	tr.Protocols = new(http.Protocols)
	if h2 {
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	return tr
}
