package handoffbench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fdpass/fdpass/graceful"
	"golang.org/x/sys/unix"
)

// The environment of a generation.
const (
	envRole  = "FDPASS_HANDOFFBENCH_ROLE"  // the variant; set: play a generation
	envN     = "FDPASS_HANDOFFBENCH_N"     // listeners
	envPort  = "FDPASS_HANDOFFBENCH_PORT"  // the first listener's port
	envPath  = "FDPASS_HANDOFFBENCH_PATH"  // fdpass: the handoff socket
	envFloor = "FDPASS_HANDOFFBENCH_FLOOR" // floor: set in a successor

	// EnvCPUProfile, if set to a directory, makes every generation write
	// a CPU profile of its start, from main to ready, there; EnvTrace
	// does the same with an execution trace (runtime/trace).
	EnvCPUProfile = "FDPASS_HANDOFFBENCH_CPUPROFILE"
	EnvTrace      = "FDPASS_HANDOFFBENCH_TRACE"
)

// The first inherited descriptor of a floor successor: 3 is the pipe on
// which it says it is ready.
const floorFirstFD = 4

// A Role is how the generations of one variant start and hand over.
type Role struct {
	Name string
	// Signalled roles start their successor themselves when sent
	// SIGHUP; the others are started by the benchmark.
	Signalled bool
	// Run plays one generation: it takes over (or, first, creates)
	// g.N listeners on g.Addrs, in order, calling g.Mark after each step
	// it wants timed and g.Ready with the listeners once ready; then it
	// makes what its successor needs, calls g.Idle, hands over when its
	// turn comes, closes everything and returns. A signalled role calls
	// g.AwaitTurn to wait for its turn.
	Run func(g *Gen) error
	// Settles roles do work after g.Ready that only the benchmark needs
	// (fdpass waits for its background duplicates, so that the next
	// handoff starts from an idle predecessor). They call g.AwaitTimed
	// first: the benchmark sends SIGUSR1 once it has timed the handoff,
	// so that this work does not compete with the predecessor's exit.
	Settles bool
}

// FDPass and Floor are the variants this package provides.
var (
	FDPass = Role{Name: "fdpass", Settles: true, Run: runFDPass}
	Floor  = Role{Name: "floor", Signalled: true, Run: runFloor}
)

// Gen is the process playing one generation.
type Gen struct {
	N     int
	Addrs []string // 127.0.0.1:port for each listener, in order

	role  string
	marks []mark
	hup   chan os.Signal
	timed chan os.Signal
	stop  func()
}

// mark is the end of a step: when, and the process's counters then.
type mark struct {
	name   string
	at     int64
	cpu    int64 // user and system, ns
	minflt int64
	nvcsw  int64
}

func newMark(name string) mark {
	at := now()
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return mark{name, at, ru.Utime.Nano() + ru.Stime.Nano(), int64(ru.Minflt), int64(ru.Nvcsw)}
}

// Main plays a generation, if this process was started as one, and exits;
// otherwise it returns at once. Call it first in TestMain, with the roles
// the process plays beside FDPass and Floor.
func Main(roles ...Role) {
	name := os.Getenv(envRole)
	if name == "" {
		return
	}
	g := &Gen{role: name, marks: []mark{newMark("main")}, stop: func() {}}
	err := g.run(append([]Role{FDPass, Floor}, roles...))
	if err != nil {
		g.say("error pid=%d msg=%s", os.Getpid(), strconv.Quote(err.Error()))
		fmt.Fprintf(os.Stderr, "handoffbench %s generation (pid %d): %v\n", name, os.Getpid(), err)
		os.Exit(1)
	}
	os.Exit(0)
}

func (g *Gen) run(roles []Role) error {
	var r *Role
	for i := range roles {
		if roles[i].Name == g.role {
			r = &roles[i]
		}
	}
	if r == nil {
		return fmt.Errorf("unknown role %q", g.role)
	}
	if r.Settles {
		g.timed = make(chan os.Signal, 1)
		signal.Notify(g.timed, syscall.SIGUSR1)
	}
	var err error
	if g.N, err = strconv.Atoi(os.Getenv(envN)); err != nil {
		return err
	}
	port, err := strconv.Atoi(os.Getenv(envPort))
	if err != nil {
		return err
	}
	g.Addrs = make([]string, g.N)
	for i := range g.Addrs {
		g.Addrs[i] = "127.0.0.1:" + strconv.Itoa(port+i)
	}
	g.profile()
	return r.Run(g)
}

// profile starts the profiles asked for in the environment; Ready stops
// them.
func (g *Gen) profile() {
	var stops []func()
	open := func(env, ext string) *os.File {
		dir := os.Getenv(env)
		if dir == "" {
			return nil
		}
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.%s", g.role, os.Getpid(), ext)))
		if err != nil {
			fmt.Fprintf(os.Stderr, "handoffbench: %v\n", err)
			return nil
		}
		stops = append(stops, func() { f.Close() })
		return f
	}
	if f := open(EnvCPUProfile, "pprof"); f != nil {
		if err := pprof.StartCPUProfile(f); err == nil {
			stops = append([]func(){pprof.StopCPUProfile}, stops...)
		}
	}
	if f := open(EnvTrace, "trace"); f != nil {
		if err := trace.Start(f); err == nil {
			stops = append([]func(){trace.Stop}, stops...)
		}
	}
	g.stop = func() {
		for _, f := range stops {
			f()
		}
	}
}

// Mark records that the step name ended now, with the CPU time, page
// faults and waits of the process so far.
func (g *Gen) Mark(name string) { g.marks = append(g.marks, newMark(name)) }

// Ready reports the generation ready with its listeners, which must be on
// g.Addrs in order; inherited says whether it took them over. The last
// mark before it is the moment it was ready.
func (g *Gen) Ready(inherited bool, lns []net.Listener) error {
	g.stop()
	if len(lns) != g.N {
		return fmt.Errorf("%d listeners, want %d", len(lns), g.N)
	}
	for i, ln := range lns {
		if got := ln.Addr().String(); got != g.Addrs[i] {
			return fmt.Errorf("listener %d is on %s, want %s", i, got, g.Addrs[i])
		}
	}
	var b strings.Builder
	for i, m := range g.marks {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%d:%d:%d:%d", m.name, m.at, m.cpu, m.minflt, m.nvcsw)
	}
	inh := 0
	if inherited {
		inh = 1
	}
	g.say("ready pid=%d inherited=%d marks=%s", os.Getpid(), inh, b.String())
	// Every generation reads the benchmark's pipe on standard input: when
	// the benchmark ends, however it ends, the generations do too.
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(3)
	}()
	return nil
}

// Idle reports that the generation is ready for its successor. A
// signalled role starts listening for SIGHUP here.
func (g *Gen) Idle() {
	g.hup = make(chan os.Signal, 1)
	signal.Notify(g.hup, syscall.SIGHUP)
	g.say("idle pid=%d", os.Getpid())
}

// AwaitTimed waits for SIGUSR1, the benchmark's signal to a role that
// Settles that the handoff to it has been timed.
func (g *Gen) AwaitTimed() { <-g.timed }

// AwaitTurn waits for SIGHUP, the benchmark's signal to a signalled role
// that it should start its successor.
func (g *Gen) AwaitTurn() { <-g.hup }

// say writes one line, in one write(2), to the benchmark.
func (g *Gen) say(format string, args ...any) {
	os.Stdout.WriteString("handoffbench " + fmt.Sprintf(format, args...) + "\n")
}

func now() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// runFDPass is one generation of a service using package graceful.
func runFDPass(g *Gen) error {
	p, err := graceful.New(graceful.Options{Path: os.Getenv(envPath)})
	if err != nil {
		return err
	}
	g.Mark("new")
	lns := make([]net.Listener, 0, g.N)
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
		p.Close()
	}
	for _, addr := range g.Addrs {
		ln, err := p.Listen("tcp", addr)
		if err != nil {
			closeAll()
			return err
		}
		lns = append(lns, ln)
	}
	g.Mark("listen")
	if err := p.Ready(); err != nil {
		closeAll()
		return err
	}
	g.Mark("ready")
	if err := g.Ready(p.Inherited(), lns); err != nil {
		closeAll()
		return err
	}
	// After Ready the Process duplicates every listener, and its handoff
	// listener, for the next successor, in the background: wait for that
	// (n listeners, n duplicates, the handoff listener and its duplicate)
	// so that the next handoff is timed from an idle predecessor. The
	// polling is the benchmark's, not the handoff's: it waits until the
	// handoff has been timed.
	g.AwaitTimed()
	if err := awaitSockets(2*g.N + 2); err != nil {
		closeAll()
		return err
	}
	g.Idle()
	<-p.Exit()
	closeAll()
	if !p.HandedOff() {
		return errors.New("the Process closed without a successor")
	}
	return nil
}

// awaitSockets polls until the process holds exactly want sockets.
func awaitSockets(want int) error {
	deadline := time.Now().Add(time.Minute)
	for {
		got, err := countSockets()
		if err != nil {
			return err
		}
		if got == want {
			return nil
		}
		if got > want || time.Now().After(deadline) {
			return fmt.Errorf("%d sockets open, want %d", got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func countSockets() (int, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, name := range names {
		if l, err := os.Readlink("/proc/self/fd/" + name); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n, nil
}

// runFloor is one generation of a service that passes its listeners to
// its successor through exec, and nothing else.
func runFloor(g *Gen) error {
	lns := make([]net.Listener, 0, g.N)
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	inherited := os.Getenv(envFloor) != ""
	if inherited {
		for i := range g.N {
			f := os.NewFile(uintptr(floorFirstFD+i), "listener")
			ln, err := net.FileListener(f)
			f.Close()
			if err != nil {
				closeAll()
				return err
			}
			lns = append(lns, ln)
		}
	} else {
		for _, addr := range g.Addrs {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				closeAll()
				return err
			}
			lns = append(lns, ln)
		}
	}
	g.Mark("listen")
	if inherited {
		ready := os.NewFile(floorFirstFD-1, "ready")
		_, err := ready.Write([]byte{1})
		ready.Close()
		if err != nil {
			closeAll()
			return err
		}
	}
	g.Mark("ready")
	if err := g.Ready(inherited, lns); err != nil {
		closeAll()
		return err
	}
	// What the successor inherits, made ahead as fdpass does.
	files := make([]*os.File, 0, len(lns))
	closeAll = func() {
		for _, ln := range lns {
			ln.Close()
		}
		for _, f := range files {
			f.Close()
		}
	}
	for _, ln := range lns {
		f, err := ln.(*net.TCPListener).File()
		if err != nil {
			closeAll()
			return err
		}
		files = append(files, f)
	}
	g.Idle()
	g.AwaitTurn()
	defer closeAll()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Env = append(os.Environ(), envFloor+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = append([]*os.File{w}, files...)
	err = cmd.Start()
	w.Close()
	if err != nil {
		return err
	}
	var b [1]byte
	if n, _ := r.Read(b[:]); n != 1 {
		return errors.New("the successor ended before it was ready")
	}
	return nil
}
