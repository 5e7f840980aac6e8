// Command demo shows a graceful restart under load: it builds the
// httpserver example, starts it, drives HTTP load at it from keep-alive and
// one-request-per-connection clients, hands the server over to new
// instances several times (once to an instance that dies before READY, so
// that the running one rolls back and keeps serving), and prints a report.
//
//	go run ./examples/demo
//
// The clients are strict: a request that fails is counted, never retried.
// A keep-alive connection that the next instance answers, never redialled,
// counts as migrated; one that the server closed with "Connection: close"
// and the client dialled anew counts as redialled. The demo exits with
// status 1 if any request failed, a takeover did not happen or moved no
// connection, or the failing successor did not fail as intended.
//
// On a terminal a progress line is updated in place; otherwise the demo
// prints plain lines only.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fdpass/fdpass/examples/internal/load"
	"github.com/fdpass/fdpass/examples/internal/proc"
)

func main() {
	cfg := config{out: os.Stdout, live: isTerminal(os.Stdout)}
	flag.IntVar(&cfg.takeovers, "takeovers", 6, "successful takeovers to perform")
	flag.DurationVar(&cfg.interval, "interval", 1500*time.Millisecond, "time between takeovers")
	flag.IntVar(&cfg.keepAlive, "keepalive", 16, "clients that reuse one connection")
	flag.IntVar(&cfg.oneShot, "oneshot", 8, "clients that open a connection per request")
	flag.Parse()
	if _, err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// config is what run does.
type config struct {
	takeovers          int
	interval           time.Duration
	keepAlive, oneShot int
	out                io.Writer
	live               bool // out is a terminal: update a progress line in place
}

// report is what run measured.
type report struct {
	load.Stats // over the whole run
	// Takeovers holds each takeover's counts, from the start of the
	// successor until every client was answered by it; their Slowest
	// counts from the successor's READY.
	Takeovers []load.Stats
	Handoffs  []time.Duration // each successor's start until its Ready returned (READY, then the connections' handoff), as it reports
	// Rollbacks counts the successors that failed before READY, as they
	// said, and that the running instance reported as rolled back.
	Rollbacks int
}

// failExit is the exit status of a successor started with
// -fail-before-ready.
const failExit = 3

// awaitMove bounds the wait for every client to reach a new instance.
const awaitMove = 15 * time.Second

func run(cfg config) (report, error) {
	var rep report
	dir, err := os.MkdirTemp("", "fdpass-demo")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(cfg.out, "building examples/httpserver ...")
	bin, err := proc.Build(dir, "github.com/fdpass/fdpass/examples/httpserver")
	if err != nil {
		return rep, err
	}
	addr, err := freeAddr()
	if err != nil {
		return rep, err
	}
	sock := filepath.Join(dir, "handoff.sock")
	args := []string{"-graceful", sock, "-listen", addr}

	var procs []*proc.Instance
	defer func() {
		for _, p := range procs {
			p.Kill()
		}
	}()
	start := func(extra ...string) (*proc.Instance, error) {
		in, err := proc.Start(bin, append(slices.Clip(args), extra...)...)
		if err == nil {
			procs = append(procs, in)
		}
		return in, err
	}
	current, err := start()
	if err != nil {
		return rep, err
	}
	if _, err := current.Await("ready", 10*time.Second); err != nil {
		return rep, err
	}
	fmt.Fprintf(cfg.out, "serving on http://%s, handoff socket %s\n", addr, sock)

	ld, err := load.Start(load.Options{
		Addr:      addr,
		KeepAlive: cfg.keepAlive,
		OneShot:   cfg.oneShot,
		Check: func(body []byte) error {
			if !strings.HasPrefix(string(body), "served by instance") {
				return errors.New("unexpected body")
			}
			return nil
		},
	})
	if err != nil {
		return rep, err
	}
	defer ld.Stop()
	began := time.Now()
	out := &printer{w: cfg.out, live: cfg.live}
	progress := func() {
		st := ld.Stats()
		out.progress(fmt.Sprintf("%5.1fs  requests %-8d failed %-4d migrated %-5d redialled %-4d instances %d",
			time.Since(began).Seconds(), st.OK+st.Failed, st.Failed, st.Migrated, st.Redialled, len(st.Instances)))
	}
	ticker := time.NewTicker(250 * time.Millisecond)
	defer ticker.Stop()
	wait := func(d time.Duration) {
		end := time.After(d)
		for {
			select {
			case <-ticker.C:
				if cfg.live {
					progress()
				}
			case <-end:
				return
			}
		}
	}
	event := func(format string, a ...any) {
		out.line(fmt.Sprintf("%5.1fs  ", time.Since(began).Seconds()) + fmt.Sprintf(format, a...))
	}

	if _, err := ld.AwaitInstance(strconv.Itoa(current.PID()), awaitMove); err != nil {
		return rep, err
	}
	for round := 0; len(rep.Takeovers) < cfg.takeovers; round++ {
		wait(cfg.interval)
		if round == 2 {
			// A successor that takes the descriptors and dies before
			// READY: the running instance must keep serving.
			bad, err := start("-fail-before-ready")
			if err != nil {
				return rep, err
			}
			reason, err := rollback(bad, current)
			if err != nil {
				return rep, fmt.Errorf("the failing successor: %w", err)
			}
			if err := servesOn(ld, current); err != nil {
				return rep, fmt.Errorf("after the rollback: %w", err)
			}
			rep.Rollbacks++
			event("rollback: successor %d exited with status %d before READY; instance %d serves on (%s)",
				bad.PID(), failExit, current.PID(), reason)
			continue
		}
		// The counts cover the whole takeover; the slowest request is
		// counted from READY: until then the running instance serves
		// alone while the successor starts up.
		w := ld.Window()
		next, err := start()
		if err != nil {
			return rep, err
		}
		// As long as a successor may take under graceful's handoff
		// timeout: on a machine loaded by other work a fresh process
		// can take seconds to start.
		if _, err := next.Await("taking-over", 30*time.Second); err != nil {
			return rep, err
		}
		fromReady := ld.Window()
		line, err := next.Await("ready", 10*time.Second)
		if err != nil {
			return rep, err
		}
		d, _ := time.ParseDuration(proc.Field(line, "handoff"))
		if err := current.Wait(15 * time.Second); err != nil {
			return rep, fmt.Errorf("the old instance: %w", err)
		}
		if _, err := ld.AwaitInstance(strconv.Itoa(next.PID()), awaitMove); err != nil {
			return rep, err
		}
		st := w.Close()
		st.Slowest = fromReady.Close().Slowest
		rep.Takeovers = append(rep.Takeovers, st)
		rep.Handoffs = append(rep.Handoffs, d)
		event("takeover %d: instance %d -> %d, handoff %v, %d connections migrated, %d redialled, %d requests failed, slowest request %v",
			len(rep.Takeovers), current.PID(), next.PID(), d, st.Migrated, st.Redialled, st.Failed, st.Slowest.Duration.Round(100*time.Microsecond))
		current = next
	}
	wait(cfg.interval)
	rep.Stats = ld.Stop()
	if cfg.live {
		progress()
	}
	out.end()
	for _, p := range procs {
		if err := p.Races(); err != nil {
			return rep, err
		}
	}
	rep.print(cfg.out)
	return rep, rep.check(cfg)
}

// rollback waits for the successor bad to fail as -fail-before-ready
// makes it (it says so, and exits with status failExit), and for the
// running instance to report that it rolled back. It returns the reason
// the running instance gave.
func rollback(bad, running *proc.Instance) (string, error) {
	line, err := bad.Await("failing", 10*time.Second)
	if err != nil {
		return "", err
	}
	if pid := proc.Field(line, "pid"); pid != strconv.Itoa(bad.PID()) {
		return "", fmt.Errorf("it said %q", line)
	}
	var exit *exec.ExitError
	if err := bad.Wait(10 * time.Second); !errors.As(err, &exit) || exit.ExitCode() != failExit {
		return "", fmt.Errorf("it exited with %v, want exit status %d", err, failExit)
	}
	line, err = running.Await("rollback", 10*time.Second)
	if err != nil {
		return "", fmt.Errorf("the running instance reported no rollback: %w", err)
	}
	if s := proc.Field(line, "successor"); s != strconv.Itoa(bad.PID()) {
		return "", fmt.Errorf("the running instance reported the rollback of successor %s, want %d: %q", s, bad.PID(), line)
	}
	if running.Exited() {
		return "", errors.New("the running instance stopped")
	}
	_, reason, _ := strings.Cut(line, "error=")
	return reason, nil
}

// servesOn checks that every client is answered by in again.
func servesOn(ld *load.Load, in *proc.Instance) error {
	before := ld.Stats()
	deadline := time.Now().Add(awaitMove)
	for {
		st := ld.Stats().Sub(before)
		n := 0
		for _, c := range st.Clients {
			if c.OK > 0 && c.Instance == strconv.Itoa(in.PID()) {
				n++
			}
		}
		if n == len(st.Clients) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d clients answered by instance %d within %v", n, len(st.Clients), in.PID(), awaitMove)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (r report) print(w io.Writer) {
	fmt.Fprintln(w, "report")
	fmt.Fprintf(w, "  requests sent       %d\n", r.OK+r.Failed)
	fmt.Fprintf(w, "  requests failed     %d\n", r.Failed)
	fmt.Fprintf(w, "  connections dialled %d\n", r.Dials)
	fmt.Fprintf(w, "  migrated            %d (a keep-alive connection answered by the next instance, never redialled)\n", r.Migrated)
	fmt.Fprintf(w, "  redialled           %d (closed by the server with \"Connection: close\", dialled anew)\n", r.Redialled)
	fmt.Fprintf(w, "  takeovers           %d\n", len(r.Takeovers))
	fmt.Fprintf(w, "  rollbacks           %d (a successor that exited before READY; the running instance reported it and served on)\n", r.Rollbacks)
	fmt.Fprintf(w, "  instances served    %d\n", len(r.Instances))
	if len(r.Handoffs) > 0 {
		h := slices.Sorted(slices.Values(r.Handoffs))
		fmt.Fprintf(w, "  handoff time        min %s  median %s  max %s (from the successor's start until READY and the connections' handoff are done)\n",
			h[0], h[len(h)/2], h[len(h)-1])
	}
	if len(r.Takeovers) > 0 {
		var s []time.Duration
		for _, t := range r.Takeovers {
			s = append(s, t.Slowest.Duration.Round(100*time.Microsecond))
		}
		slices.Sort(s)
		fmt.Fprintf(w, "  slowest request     %v overall; of a takeover (READY until every client is answered by the successor) min %s  median %s  max %s\n",
			r.Slowest, s[0], s[len(s)/2], s[len(s)-1])
	}
	for _, e := range r.Errors {
		fmt.Fprintln(w, "  error:", e)
	}
}

// check returns an error if the run showed a failure.
func (r report) check(cfg config) error {
	var errs []error
	if r.Failed > 0 {
		errs = append(errs, fmt.Errorf("%d requests failed", r.Failed))
	}
	if n := len(r.Instances); n != cfg.takeovers+1 {
		errs = append(errs, fmt.Errorf("%d instances served, want %d", n, cfg.takeovers+1))
	}
	for i, t := range r.Takeovers {
		if cfg.keepAlive > 0 && t.Migrated == 0 {
			errs = append(errs, fmt.Errorf("takeover %d migrated no connection", i+1))
		}
	}
	return errors.Join(errs...)
}

// printer writes event lines, and on a terminal a progress line that each
// update rewrites in place.
type printer struct {
	w        io.Writer
	live     bool
	progWide int // width of the progress line on screen
}

func (p *printer) progress(s string) {
	fmt.Fprintf(p.w, "\r%-*s", p.progWide, s)
	p.progWide = len(s)
}

func (p *printer) line(s string) {
	if p.live && p.progWide > 0 {
		// Over the progress line; the next update writes it anew below.
		fmt.Fprintf(p.w, "\r%-*s\r", p.progWide, "")
		p.progWide = 0
	}
	fmt.Fprintln(p.w, s)
}

// end ends the output before the report: the progress line stays.
func (p *printer) end() {
	if p.live && p.progWide > 0 {
		fmt.Fprintln(p.w)
		p.progWide = 0
	}
	fmt.Fprintln(p.w)
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
