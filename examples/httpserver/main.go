// Command httpserver is an HTTP server that restarts without refusing a
// connection or failing a request: start a new instance with the same flags
// and it takes the listening socket over from the running one, which
// finishes the requests it has in hand and exits.
//
//	go run ./examples/httpserver &
//	curl localhost:3333
//	go run ./examples/httpserver &   # takes over; the first one exits
//	curl localhost:3333
//	kill -HUP %1                     # the running instance starts its successor
//	go run ./examples/httpserver -reload   # the same, and waits for the verdict
//
// Every response says which instance served it. /slow?ms=N answers after N
// milliseconds (at most 10 s): a request in hand at a takeover, whose
// connection moves once it is answered. The handoff socket
// (-graceful) is where a new instance finds the running one; it passes to
// the new instance with the listener, so it never goes missing. Keep-alive
// connections move to the new instance too (graceful.HTTPServer): a
// client's connection outlives the process that accepted it.
//
// In a container it can be PID 1, alone: graceful keeps a supervisor
// there that outlives every takeover (under docker run --init or tini,
// set FDPASS_SUPERVISE=1 for the same):
//
//	docker kill -s HUP CONTAINER               # the serving instance starts its successor
//	docker exec CONTAINER httpserver -reload   # the same, and waits for the verdict
//
// The process reports on standard output, one line per event:
//
//	taking-over pid=1240 generation=3   (a successor, as it says READY)
//	ready pid=1234 generation=2 inherited=true handoff=3.1ms addr=127.0.0.1:3333
//	late pid=1234 moved=3   (connections busy at the takeover moved after their response)
//	rollback pid=1234 successor=1240 error="..."   (a successor failed; this one serves on)
//	spares pid=1234   (out of descriptors, it starts its successor on its spare ones)
//	failing pid=1240 generation=3   (with -fail-before-ready, before it exits with status 3)
//	exit pid=1234 served=5120
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fdpass/fdpass/examples/internal/cli"
	"github.com/fdpass/fdpass/graceful"
)

// Messages a Process reports to its Logger: a successor failed and it
// serves on; connections busy at the takeover moved after it; out of
// descriptors, it starts its successor on its spare ones.
const (
	rolledBack   = "graceful: handoff rolled back; still serving"
	movedLate    = "graceful: connections moved after the takeover"
	spareUpgrade = "graceful: upgrade: out of descriptors; starting the successor on the spare ones, accepts held"
)

// maxSlow bounds the delay /slow?ms= asks for.
const maxSlow = 10 * time.Second

func main() {
	handoff := cli.Flags("httpserver")
	var c config
	flag.StringVar(&c.addr, "listen", "localhost:3333", "HTTP listen `address`")
	flag.DurationVar(&c.drain, "drain", 10*time.Second, "how long the old instance waits for requests in hand")
	flag.BoolVar(&c.failBeforeReady, "fail-before-ready", false, "take the descriptors over, then exit without saying READY (to watch a rollback)")
	flag.BoolVar(&c.refuseConns, "refuse-connections", false, "say READY, then refuse the connections the predecessor hands over and exit (to watch a rollback after READY)")
	flag.BoolVar(&c.verbose, "v", false, "log handoffs to standard error")
	flag.Parse()
	handoff.Reload()
	c.sock = handoff.Path()
	if err := run(c); err != nil {
		log.Fatal(err)
	}
}

// config is what the flags set.
type config struct {
	sock, addr      string
	drain           time.Duration
	failBeforeReady bool
	refuseConns     bool
	verbose         bool
}

func run(c config) error {
	start := time.Now()
	var h events
	if c.verbose {
		h.next = slog.NewTextHandler(os.Stderr, nil)
	}
	opts := graceful.Options{Path: c.sock, Logger: slog.New(h), Migrate: true}
	if c.refuseConns {
		// A successor that fails after READY: the predecessor takes its
		// connections back and serves on.
		opts.Migrated = func(conns []*graceful.Conn) error {
			return fmt.Errorf("-refuse-connections: refused %d connections", len(conns))
		}
	}
	p, err := graceful.New(opts)
	if err != nil {
		return err
	}
	defer p.Close()
	ln, err := p.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	if c.failBeforeReady {
		// A successor that dies before READY: the running instance keeps
		// serving and the next successor can try again.
		fmt.Printf("failing pid=%d generation=%d\n", os.Getpid(), p.Generation())
		os.Exit(3)
	}

	var served atomic.Int64
	id := strconv.Itoa(os.Getpid())
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
				if err != nil || ms < 0 || time.Duration(ms)*time.Millisecond > maxSlow {
					http.Error(w, fmt.Sprintf("want /slow?ms=N, N from 0 to %d", maxSlow.Milliseconds()), http.StatusBadRequest)
					return
				}
				select {
				case <-time.After(time.Duration(ms) * time.Millisecond):
				case <-r.Context().Done():
					return
				}
			}
			served.Add(1)
			w.Header().Set("X-Instance", id)
			fmt.Fprintf(w, "served by instance %s (generation %d)\n", id, p.Generation())
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	// Keep-alive connections migrate to the successor at a takeover,
	// idle ones at once and busy ones after their response.
	hs := p.HTTP(srv)
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	if p.Inherited() {
		// From READY on the predecessor stops accepting and hands its
		// keep-alive connections over.
		fmt.Printf("taking-over pid=%d generation=%d\n", os.Getpid(), p.Generation())
	}
	// Before Ready: from READY on, the signals for the service come to
	// this process (a container's supervisor forwards them here, systemd
	// names it MAINPID), and SIGHUP's default action would end it.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	// Drain what stays here. http.Server.Shutdown would close idle
	// keep-alive connections at once, under a client that may be sending
	// its next request on one; instead stop accepting, answer each
	// connection's next request with "Connection: close", and wait for
	// them to end.
	drain := func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.drain)
		defer cancel()
		if e := hs.Drain(ctx); e != nil {
			// Connections still open after -drain were closed.
			log.Printf("drain: %v", e)
		}
	}
	if err := p.Ready(); err != nil {
		// The takeover failed and the predecessor serves on: this
		// process finishes the requests of the connections it accepted
		// meanwhile, which are its own, before it exits.
		drain()
		return err
	}
	fmt.Printf("ready pid=%d generation=%d inherited=%t handoff=%s addr=%s\n",
		os.Getpid(), p.Generation(), p.Inherited(), time.Since(start).Round(100*time.Microsecond), ln.Addr())

wait:
	for {
		select {
		case <-p.Exit():
			// A successor said READY and took the connections that
			// could move: it serves from now on.
			break wait
		case s := <-sig:
			if s == syscall.SIGHUP {
				// Start the successor, this binary again; Exit closes
				// once it has taken over. On failure this instance
				// serves on.
				go func() {
					if err := p.Upgrade(context.Background()); err != nil {
						log.Printf("reload: %v", err)
					}
				}()
				continue
			}
			// Stopping with no successor. Under systemd the listener is
			// in the descriptor store since Ready (or in the socket
			// unit), so that the next start adopts it.
			break wait
		case err := <-serveErr:
			return err
		}
	}
	drain()
	if e := <-serveErr; !errors.Is(e, http.ErrServerClosed) {
		err = errors.Join(err, e)
	}
	fmt.Printf("exit pid=%d served=%d\n", os.Getpid(), served.Load())
	return err
}

// events prints a "rollback" line for each rollback the Process reports
// to its Logger, a "late" line for each takeover after which busy
// connections moved and a "spares" line for each successor started on the
// spare descriptors, and passes every report on to next, if set.
type events struct {
	next  slog.Handler
	attrs []slog.Attr // added with WithAttrs: the successor's pid
}

func (h events) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next != nil && h.next.Enabled(ctx, l)
}

func (h events) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == movedLate {
		moved := ""
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "count" {
				moved = a.Value.String()
			}
			return true
		})
		fmt.Printf("late pid=%d moved=%s\n", os.Getpid(), moved)
	}
	if r.Message == spareUpgrade {
		fmt.Printf("spares pid=%d\n", os.Getpid())
	}
	if r.Message == rolledBack {
		successor, reason := "", ""
		for _, a := range h.attrs {
			if a.Key == "pid" {
				successor = a.Value.String()
			}
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" {
				reason = a.Value.String()
			}
			return true
		})
		fmt.Printf("rollback pid=%d successor=%s error=%q\n", os.Getpid(), successor, reason)
	}
	if h.next != nil && h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h events) WithAttrs(as []slog.Attr) slog.Handler {
	if h.next != nil {
		h.next = h.next.WithAttrs(as)
	}
	h.attrs = append(slices.Clip(h.attrs), as...)
	return h
}

func (h events) WithGroup(name string) slog.Handler {
	if h.next != nil {
		h.next = h.next.WithGroup(name)
	}
	return h
}
