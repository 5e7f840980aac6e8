package handoffbench

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// waitLimit bounds every wait of the benchmark for a generation.
const waitLimit = time.Minute

// Sample is one timed handoff.
type Sample struct {
	// Total runs from just before the successor was started (for a
	// signalled role: before SIGHUP was sent) until the successor was
	// ready and the predecessor had been reaped, whichever came last.
	Total time.Duration
	// Phases split Total: "exec" until the successor's main began,
	// then each step the successor marked, named by the mark that ends
	// it, then "exit", from the successor's readiness until the
	// predecessor was reaped (zero if that came first).
	Phases []Phase
	// The successor's counters until ready, as in Phase.
	CPU      time.Duration
	MinFlt   int64
	Switches int64
}

// Phase is a named part of a handoff.
type Phase struct {
	Name string
	D    time.Duration
	// The successor's CPU time (user and system, all threads), minor
	// page faults and voluntary context switches (waits) in the phase;
	// zero for "exit", which is the predecessor's. For "exec", what the
	// successor's process used from its fork to its main.
	CPU      time.Duration
	MinFlt   int64
	Switches int64
}

// Phase returns the duration of the named phase, or zero.
func (s Sample) Phase(name string) time.Duration {
	for _, p := range s.Phases {
		if p.Name == name {
			return p.D
		}
	}
	return 0
}

// Chain is a line of generations of one role: one serving, idle
// generation between handoffs.
type Chain struct {
	role  Role
	n     int
	port  int
	bin   string
	env   []string
	pgid  int
	cur   *proc
	ops   int
	inR   *os.File // standard input of every generation
	inW   *os.File
	outR  *os.File // standard output of every generation
	outW  *os.File
	lines chan event
	done  chan struct{} // the reader of outR has ended
}

// proc is a generation whose end the benchmark waits for.
type proc struct {
	pid  int
	done chan struct{}
	at   int64 // when it was reaped
	ws   unix.WaitStatus
	err  error
}

type event struct {
	kind string // ready, idle, error
	pid  int
	line string
	kv   map[string]string
}

// NewChain starts the first generation of role with n listeners and
// waits for it to be idle. The chain ends, and every generation is
// killed, when tb ends. The generations run this test binary: its
// TestMain must call Main.
func NewChain(tb testing.TB, role Role, n int) *Chain {
	tb.Helper()
	NeedFiles(tb, uint64(2*n+64))
	if role.Signalled {
		// A signalled role's successor is its predecessor's child:
		// reparented here when the predecessor exits, so that it can
		// be reaped.
		subreaper(tb)
	}
	bin, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	c := &Chain{role: role, n: n, bin: bin, lines: make(chan event, 16), done: make(chan struct{})}
	if c.inR, c.inW, err = os.Pipe(); err != nil {
		tb.Fatal(err)
	}
	if c.outR, c.outW, err = os.Pipe(); err != nil {
		c.inR.Close()
		c.inW.Close()
		tb.Fatal(err)
	}
	go c.read()
	tb.Cleanup(c.close)
	dir := tb.TempDir()
	for attempt := 1; ; attempt++ {
		if c.port, err = freePorts(n); err != nil {
			tb.Fatal(err)
		}
		c.env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
			return strings.HasPrefix(kv, "FDPASS_HANDOFFBENCH_") && !strings.HasPrefix(kv, EnvCPUProfile+"=") && !strings.HasPrefix(kv, EnvTrace+"=")
		}),
			envRole+"="+role.Name,
			envN+"="+strconv.Itoa(n),
			envPort+"="+strconv.Itoa(c.port),
			envPath+"="+filepath.Join(dir, fmt.Sprintf("handoff-%d.sock", attempt)))
		err = c.first()
		if err == nil {
			return c
		}
		// Another process may have bound one of the ports between
		// freePorts and the first generation: try others.
		if !strings.Contains(err.Error(), "address already in use") || attempt == 3 {
			tb.Fatalf("%s: first generation: %v", role.Name, err)
		}
	}
}

// first starts the first generation and waits for it to be idle.
func (c *Chain) first() error {
	pid, err := c.spawn(0)
	if err != nil {
		return err
	}
	p := c.track(pid)
	c.pgid = pid
	ev, err := c.await(p, "ready", nil)
	if err != nil {
		return err
	}
	if ev.kv["inherited"] != "0" {
		return fmt.Errorf("the first generation inherited its listeners: %s", ev.line)
	}
	if err := c.timed(p.pid); err != nil {
		return err
	}
	if _, err := c.await(p, "idle", nil); err != nil {
		return err
	}
	c.cur = p
	return nil
}

// spawn starts a generation in the chain's process group (a new one if
// pgid is 0).
func (c *Chain) spawn(pgid int) (int, error) {
	return syscall.ForkExec(c.bin, []string{c.bin}, &syscall.ProcAttr{
		Env:   c.env,
		Files: []uintptr{c.inR.Fd(), c.outW.Fd(), os.Stderr.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Pgid: pgid},
	})
}

// track waits for the end of pid, a child of this process, in the
// background.
func (c *Chain) track(pid int) *proc {
	p := &proc{pid: pid, done: make(chan struct{})}
	go func() {
		for {
			_, err := unix.Wait4(pid, &p.ws, 0, nil)
			if err == unix.EINTR {
				continue
			}
			p.at, p.err = now(), err
			close(p.done)
			return
		}
	}()
	return p
}

// exitErr says how p ended, if that was not a success.
func (p *proc) exitErr() error {
	switch {
	case p.err != nil:
		return fmt.Errorf("waiting for generation %d: %w", p.pid, p.err)
	case !p.ws.Exited():
		return fmt.Errorf("generation %d ended by %v", p.pid, p.ws.Signal())
	case p.ws.ExitStatus() != 0:
		return fmt.Errorf("generation %d exited with status %d", p.pid, p.ws.ExitStatus())
	}
	return nil
}

// read turns the generations' lines into events.
func (c *Chain) read() {
	defer close(c.done)
	defer close(c.lines)
	s := bufio.NewScanner(c.outR)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		line, ok := strings.CutPrefix(s.Text(), "handoffbench ")
		if !ok {
			fmt.Fprintln(os.Stderr, s.Text())
			continue
		}
		f := strings.Fields(line)
		ev := event{kind: f[0], line: line, kv: map[string]string{}}
		for _, w := range f[1:] {
			if k, v, ok := strings.Cut(w, "="); ok {
				ev.kv[k] = v
			}
		}
		if ev.kind == "error" {
			_, msg, _ := strings.Cut(line, "msg=")
			if q, err := strconv.Unquote(msg); err == nil {
				ev.kv["msg"] = q
			}
		}
		ev.pid, _ = strconv.Atoi(ev.kv["pid"])
		c.lines <- ev
	}
}

// await waits for the next event, which must be of kind and come from
// from (any process if from is nil), failing if from ends first or watch
// (if not nil) ends with a failure.
func (c *Chain) await(from *proc, kind string, watch *proc) (event, error) {
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	var exited, watched chan struct{}
	if from != nil {
		exited = from.done
	}
	if watch != nil {
		watched = watch.done
	}
	for {
		select {
		case ev, ok := <-c.lines:
			return c.check(ev, ok, from, kind)
		case <-watched:
			if err := watch.exitErr(); err != nil {
				return event{}, err
			}
			watched = nil
		case <-exited:
			// Its last words may still be on their way.
			select {
			case ev, ok := <-c.lines:
				return c.check(ev, ok, from, kind)
			case <-time.After(time.Second):
			}
			if err := from.exitErr(); err != nil {
				return event{}, err
			}
			return event{}, fmt.Errorf("generation %d exited before %s", from.pid, kind)
		case <-timeout.C:
			return event{}, fmt.Errorf("no %s from %s within %v", kind, c.role.Name, waitLimit)
		}
	}
}

func (c *Chain) check(ev event, ok bool, p *proc, kind string) (event, error) {
	switch {
	case !ok:
		return ev, errors.New("the generations' output ended")
	case ev.kind == "error":
		return ev, fmt.Errorf("generation %d: %s", ev.pid, ev.kv["msg"])
	case ev.kind != kind:
		return ev, fmt.Errorf("%s where %s was due: %s", ev.kind, kind, ev.line)
	case p != nil && ev.pid != p.pid:
		return ev, fmt.Errorf("%s from %d, want %d", kind, ev.pid, p.pid)
	}
	return ev, nil
}

// Handoff hands the listeners from the serving generation to a new one,
// timed, and waits (untimed) for the new one to be idle.
func (c *Chain) Handoff() (Sample, error) {
	pred := c.cur
	var succ *proc
	start := now()
	if c.role.Signalled {
		if err := unix.Kill(pred.pid, unix.SIGHUP); err != nil {
			return Sample{}, err
		}
	} else {
		pid, err := c.spawn(c.pgid)
		if err != nil {
			return Sample{}, err
		}
		succ = c.track(pid)
	}
	// The successor's readiness and the predecessor's end come in any
	// order; the predecessor's tracker notes when it was reaped.
	ready, err := c.await(succ, "ready", pred)
	if err == nil && ready.pid == pred.pid {
		err = fmt.Errorf("ready from the predecessor: %s", ready.line)
	}
	if err != nil {
		return Sample{}, err
	}
	select {
	case <-pred.done:
		err = pred.exitErr()
	case <-time.After(waitLimit):
		err = fmt.Errorf("predecessor %d still running %v after its successor was ready", pred.pid, waitLimit)
	}
	if err != nil {
		return Sample{}, err
	}
	if ready.kv["inherited"] != "1" {
		return Sample{}, fmt.Errorf("the successor did not inherit its listeners: %s", ready.line)
	}
	s, err := sample(start, ready, pred.at)
	if err != nil {
		return Sample{}, err
	}
	if succ == nil {
		// Its parent, the predecessor, has been reaped: it is ours now.
		succ = c.track(ready.pid)
	}
	if err := c.timed(succ.pid); err != nil {
		return Sample{}, err
	}
	if _, err := c.await(succ, "idle", nil); err != nil {
		return Sample{}, err
	}
	c.cur = succ
	c.ops++
	if c.ops == 1 {
		if err := c.dialAll(); err != nil {
			return Sample{}, err
		}
	}
	return s, nil
}

// sample builds the Sample of a handoff that started at start from the
// successor's ready line and the time its predecessor was reaped.
func sample(start int64, ready event, reaped int64) (Sample, error) {
	var s Sample
	var prev [4]int64 // at, cpu, minflt, nvcsw
	prev[0] = start
	for i, m := range strings.Split(ready.kv["marks"], ",") {
		f := strings.Split(m, ":")
		var v [4]int64
		var err error
		if len(f) != 5 {
			err = errors.New("want name:at:cpu:minflt:nvcsw")
		}
		for j := 0; err == nil && j < 4; j++ {
			v[j], err = strconv.ParseInt(f[j+1], 10, 64)
		}
		if err != nil || v[0] < prev[0] {
			return s, fmt.Errorf("bad marks (%v): %s", err, ready.line)
		}
		name := f[0]
		if i == 0 {
			name = "exec"
		}
		s.Phases = append(s.Phases, Phase{name, time.Duration(v[0] - prev[0]), time.Duration(v[1] - prev[1]), v[2] - prev[2], v[3] - prev[3]})
		prev = v
	}
	s.Phases = append(s.Phases, Phase{Name: "exit", D: time.Duration(max(0, reaped-prev[0]))})
	s.Total = time.Duration(max(prev[0], reaped) - start)
	s.CPU, s.MinFlt, s.Switches = time.Duration(prev[1]), prev[2], prev[3]
	return s, nil
}

// timed tells a generation of a role that Settles that its takeover has
// been timed.
func (c *Chain) timed(pid int) error {
	if !c.role.Settles {
		return nil
	}
	return unix.Kill(pid, unix.SIGUSR1)
}

// dialAll checks that every listener of the serving generation accepts a
// connection.
func (c *Chain) dialAll() error {
	for i := range c.n {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(c.port+i), 10*time.Second)
		if err != nil {
			return fmt.Errorf("%s after a handoff: %w", c.role.Name, err)
		}
		conn.Close()
	}
	return nil
}

// close kills every generation of the chain, reaps them and closes the
// pipes.
func (c *Chain) close() {
	// The group's id is the chain's as long as one of its members lives
	// (or is a zombie): while a child of this process is in it, which is
	// the case whenever any member is, since the others descend from one.
	var info unix.Siginfo
	if c.pgid != 0 && unix.Waitid(unix.P_PGID, c.pgid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil) == nil {
		unix.Kill(-c.pgid, unix.SIGKILL)
		// Reap the whole group, successors reparented here included;
		// the trackers of the others see ECHILD, which is fine now.
		for {
			_, err := unix.Wait4(-c.pgid, nil, 0, nil)
			if err != nil && err != unix.EINTR {
				break
			}
		}
	}
	c.inW.Close()
	c.inR.Close()
	c.outW.Close()
	for range c.lines {
	}
	<-c.done
	c.outR.Close()
}

// subreaper makes this process the reaper of its orphaned descendants
// until tb ends.
func subreaper(tb testing.TB) {
	tb.Helper()
	var was int32
	if err := unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&was)), 0, 0, 0); err != nil {
		tb.Fatal(err)
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, uintptr(was), 0, 0, 0) })
}

// NeedFiles raises this process's soft RLIMIT_NOFILE to at least n (the
// generations, Go programs, raise theirs to their hard limit, which they
// inherit), or skips tb if the hard limit is lower and cannot be raised.
func NeedFiles(tb testing.TB, n uint64) {
	tb.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	if lim.Cur >= n && lim.Max >= n {
		return
	}
	want := syscall.Rlimit{Cur: max(lim.Max, n), Max: max(lim.Max, n)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		tb.Skipf("needs RLIMIT_NOFILE of %d (have %d, hard %d) and cannot raise it: %v", n, lim.Cur, lim.Max, err)
	}
}

// freePorts finds n consecutive ports on 127.0.0.1 that nothing is bound
// to, below the range the kernel picks ephemeral ports from (where bind
// with port 0 and connect take theirs), and returns the first.
func freePorts(n int) (int, error) {
	lo, hi := 10000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v-lo >= n {
				hi = v
			}
		}
	}
	if hi-lo < n {
		return 0, fmt.Errorf("no room for %d ports below %d", n, hi)
	}
	for range 50 {
		base := lo + rand.IntN(hi-lo-n+1)
		lns := make([]net.Listener, 0, n)
		for i := range n {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+i))
			if err != nil {
				break
			}
			lns = append(lns, ln)
		}
		for _, ln := range lns {
			ln.Close()
		}
		if len(lns) == n {
			return base, nil
		}
	}
	return 0, fmt.Errorf("found no %d free consecutive ports", n)
}

// Median returns the median of ds (the mean of the middle two for an even
// count), or zero for none.
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
