// Command httpserver is an HTTP server that restarts without refusing a
// connection or failing a request: start a new instance with the same flags
// and it takes the listening socket over from the running one, which
// finishes the requests it has in hand and exits.
//
//	go run ./examples/httpserver &
//	curl localhost:3333
//	go run ./examples/httpserver &   # takes over; the first one exits
//	curl localhost:3333
//
// Every response says which instance served it. The handoff socket
// (-graceful) is where a new instance finds the running one; it passes to
// the new instance with the listener, so it never goes missing.
//
// The process reports on standard output, one line per event:
//
//	ready pid=1234 generation=2 inherited=true handoff=3.1ms addr=127.0.0.1:3333
//	exit pid=1234 served=5120
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fdpass/fdpass/graceful"
)

func main() {
	sock := flag.String("graceful", "/tmp/graceful.sock", "handoff socket `path` (or @abstract name)")
	addr := flag.String("listen", "localhost:3333", "HTTP listen `address`")
	drain := flag.Duration("drain", 10*time.Second, "how long the old instance waits for requests in hand")
	failBeforeReady := flag.Bool("fail-before-ready", false, "take the descriptors over, then exit without saying READY (to watch a rollback)")
	verbose := flag.Bool("v", false, "log handoffs to standard error")
	flag.Parse()
	if err := run(*sock, *addr, *drain, *failBeforeReady, *verbose); err != nil {
		log.Fatal(err)
	}
}

func run(sock, addr string, drain time.Duration, failBeforeReady, verbose bool) error {
	start := time.Now()
	var logger *slog.Logger
	if verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	p, err := graceful.New(graceful.Options{Path: sock, Logger: logger})
	if err != nil {
		return err
	}
	defer p.Close()
	ln, err := p.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if failBeforeReady {
		// A successor that dies before READY: the running instance keeps
		// serving and the next successor can try again.
		fmt.Printf("failing pid=%d generation=%d\n", os.Getpid(), p.Generation())
		os.Exit(3)
	}

	var served atomic.Int64
	var draining atomic.Bool
	conns := newConnCount()
	id := strconv.Itoa(os.Getpid())
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			served.Add(1)
			if draining.Load() {
				// The successor serves new connections; this one ends
				// cleanly after its response instead of being cut while
				// the client may be sending on it.
				w.Header().Set("Connection", "close")
			}
			w.Header().Set("X-Instance", id)
			fmt.Fprintf(w, "served by instance %s (generation %d)\n", id, p.Generation())
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ConnState:         conns.track,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if err := p.Ready(); err != nil {
		return err
	}
	fmt.Printf("ready pid=%d generation=%d inherited=%t handoff=%s addr=%s\n",
		os.Getpid(), p.Generation(), p.Inherited(), time.Since(start).Round(100*time.Microsecond), ln.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-p.Exit():
		// A successor said READY: it serves from now on.
	case <-sig:
	case err := <-serveErr:
		return err
	}
	// Drain. http.Server.Shutdown would close idle keep-alive connections
	// at once, under a client that may be sending its next request on
	// one; instead stop accepting, answer each connection's next request
	// with "Connection: close", and wait for them to end.
	draining.Store(true)
	ln.Close()
	if e := <-serveErr; !errors.Is(e, net.ErrClosed) && !errors.Is(e, http.ErrServerClosed) {
		err = e
	}
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if conns.wait(ctx) != nil {
		err = errors.Join(err, srv.Close())
	}
	fmt.Printf("exit pid=%d served=%d\n", os.Getpid(), served.Load())
	return err
}

// connCount counts a server's open connections.
type connCount struct {
	n    atomic.Int64
	zero chan struct{} // gets a value whenever the count drops to zero
}

func newConnCount() *connCount { return &connCount{zero: make(chan struct{}, 1)} }

func (c *connCount) track(_ net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		c.n.Add(1)
	case http.StateHijacked, http.StateClosed:
		if c.n.Add(-1) == 0 {
			select {
			case c.zero <- struct{}{}:
			default:
			}
		}
	}
}

// wait returns when no connection is open, or ctx's error.
func (c *connCount) wait(ctx context.Context) error {
	for c.n.Load() > 0 {
		select {
		case <-c.zero:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
