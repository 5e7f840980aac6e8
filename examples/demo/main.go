// Command demo shows a graceful restart under load: it builds the
// httpserver example, starts it, drives HTTP load at it from keep-alive and
// one-request-per-connection clients, hands the server over to new
// instances several times (once to an instance that dies before READY, so
// that the running one rolls back and keeps serving), and prints a report.
//
//	go run ./examples/demo
//
// The clients are strict: a request that fails is counted, never retried.
// The demo exits with status 1 if any request failed or a takeover did not
// happen.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fdpass/fdpass/examples/internal/proc"
)

func main() {
	takeovers := flag.Int("takeovers", 6, "successful takeovers to perform")
	interval := flag.Duration("interval", 1500*time.Millisecond, "time between takeovers")
	keepAlive := flag.Int("keepalive", 16, "clients that reuse one connection")
	oneShot := flag.Int("oneshot", 8, "clients that open a connection per request")
	flag.Parse()
	if err := run(*takeovers, *interval, *keepAlive, *oneShot); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type stats struct {
	requests, failed atomic.Int64
	mu               sync.Mutex
	instances        map[string]int64
	firstErrs        []string
}

func (s *stats) ok(instance string) {
	s.requests.Add(1)
	s.mu.Lock()
	s.instances[instance]++
	s.mu.Unlock()
}

func (s *stats) served() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.instances)
}

func (s *stats) fail(err error) {
	s.requests.Add(1)
	s.failed.Add(1)
	s.mu.Lock()
	if len(s.firstErrs) < 5 {
		s.firstErrs = append(s.firstErrs, err.Error())
	}
	s.mu.Unlock()
}

func run(takeovers int, interval time.Duration, keepAlive, oneShot int) error {
	dir, err := os.MkdirTemp("", "fdpass-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Println("building examples/httpserver ...")
	bin, err := proc.Build(dir, "github.com/fdpass/fdpass/examples/httpserver")
	if err != nil {
		return err
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	sock := filepath.Join(dir, "handoff.sock")
	args := []string{"-graceful", sock, "-listen", addr}

	var procs []*proc.Instance
	defer func() {
		for _, p := range procs {
			p.Kill()
		}
	}()
	first, err := proc.Start(bin, args...)
	if err != nil {
		return err
	}
	procs = append(procs, first)
	if _, err := first.Await("ready", 10*time.Second); err != nil {
		return err
	}
	fmt.Printf("serving on http://%s, handoff socket %s\n", addr, sock)

	st := &stats{instances: map[string]int64{}}
	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var load sync.WaitGroup
	for range keepAlive {
		load.Go(func() { keepAliveClient(ctx, addr, st) })
	}
	for range oneShot {
		load.Go(func() { oneShotClient(ctx, addr, st) })
	}
	start := time.Now()
	progress := func() {
		fmt.Printf("\r%5.1fs  requests %-8d failed %-4d instances %d ",
			time.Since(start).Seconds(), st.requests.Load(), st.failed.Load(), st.served())
	}
	ticker := time.NewTicker(250 * time.Millisecond)
	defer ticker.Stop()
	wait := func(d time.Duration) {
		end := time.After(d)
		for {
			select {
			case <-ticker.C:
				progress()
			case <-end:
				return
			}
		}
	}

	var handoffs []time.Duration
	rollbacks := 0
	current := first
	for done, round := 0, 0; done < takeovers; round++ {
		wait(interval)
		if round == 2 {
			// A successor that takes the descriptors and dies before
			// READY: the running instance must keep serving.
			bad, err := proc.Start(bin, append(args, "-fail-before-ready")...)
			if err != nil {
				return err
			}
			procs = append(procs, bad)
			if err := bad.Wait(10 * time.Second); err == nil {
				return errors.New("the failing successor exited cleanly")
			}
			if current.Exited() {
				return errors.New("the running instance stopped after a failed successor")
			}
			rollbacks++
			continue
		}
		next, err := proc.Start(bin, args...)
		if err != nil {
			return err
		}
		procs = append(procs, next)
		line, err := next.Await("ready", 10*time.Second)
		if err != nil {
			return err
		}
		d, _ := time.ParseDuration(proc.Field(line, "handoff"))
		handoffs = append(handoffs, d)
		if err := current.Wait(15 * time.Second); err != nil {
			return fmt.Errorf("the old instance: %w", err)
		}
		current = next
		done++
	}
	wait(interval)
	stopLoad()
	load.Wait()
	progress()
	fmt.Println()

	slices.Sort(handoffs)
	fmt.Println()
	fmt.Println("report")
	fmt.Printf("  requests sent     %d\n", st.requests.Load())
	fmt.Printf("  requests failed   %d\n", st.failed.Load())
	fmt.Printf("  takeovers         %d\n", len(handoffs))
	fmt.Printf("  rollbacks         %d (a successor that died before READY)\n", rollbacks)
	fmt.Printf("  instances served  %d\n", st.served())
	if len(handoffs) > 0 {
		fmt.Printf("  handoff time      min %s  median %s  max %s (successor start to READY)\n",
			handoffs[0], handoffs[len(handoffs)/2], handoffs[len(handoffs)-1])
	}
	for _, e := range st.firstErrs {
		fmt.Println("  error:", e)
	}
	if st.failed.Load() > 0 {
		return fmt.Errorf("%d requests failed", st.failed.Load())
	}
	if n := st.served(); n != takeovers+1 {
		return fmt.Errorf("%d instances served, want %d", n, takeovers+1)
	}
	return nil
}

// keepAliveClient sends requests one after another on one connection,
// opening a new one only when the server closes it cleanly (after a
// response with "Connection: close"), the way a load generator such as wrk
// does. It does not retry: an error is a failed request.
func keepAliveClient(ctx context.Context, addr string, st *stats) {
	var c net.Conn
	var br *bufio.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for ctx.Err() == nil {
		if c == nil {
			var err error
			if c, err = net.Dial("tcp", addr); err != nil {
				st.fail(err)
				continue
			}
			br = bufio.NewReader(c)
		}
		instance, closing, err := get(c, br, addr, true)
		if err != nil {
			st.fail(err)
			c.Close()
			c = nil
			continue
		}
		st.ok(instance)
		if closing {
			c.Close()
			c = nil
		}
	}
}

// oneShotClient opens a connection for each request.
func oneShotClient(ctx context.Context, addr string, st *stats) {
	for ctx.Err() == nil {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			st.fail(err)
			continue
		}
		instance, _, err := get(c, bufio.NewReader(c), addr, false)
		c.Close()
		if err != nil {
			st.fail(err)
			continue
		}
		st.ok(instance)
	}
}

// get sends one GET on c and reads the response.
func get(c net.Conn, br *bufio.Reader, addr string, keepAlive bool) (instance string, closing bool, err error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	conn := "keep-alive"
	if !keepAlive {
		conn = "close"
	}
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: %s\r\n\r\n", addr, conn); err != nil {
		return "", false, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", false, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", false, err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "served by instance") {
		return "", false, fmt.Errorf("unexpected response %s: %q", resp.Status, body)
	}
	return resp.Header.Get("X-Instance"), resp.Close, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
