// Package childtest runs a test binary again as a second process. The
// project's cross-process tests use real processes: a test starts its own
// binary again in a role it names, hands it descriptors and environment,
// reads the lines it prints and waits for it to exit.
//
// A package's TestMain is
//
//	func TestMain(m *testing.M) { childtest.Main(m) }
//
// and each test file registers the roles it plays:
//
//	var _ = childtest.Register("sender", func() error {
//		// runs in the child; an error fails it (exit status 1)
//	})
//
//	c := childtest.Start(t, "sender", childtest.Options{Files: []*os.File{f}})
//	line := c.Expect("ready") // a line the child printed
//	c.MustExit()
//
// The role travels in the environment variable Env; Main plays it instead
// of running the tests. Every process, parent and child, warms up first
// (fdtest.WarmUp), so that descriptor counts compare like with like.
package childtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/internal/fdtest"
)

// Env names the role a re-run test binary plays.
const Env = "FDPASS_TEST_CHILD"

// VerboseEnv, when set, makes every child's output lines go to the test's
// stderr as they arrive, each after the child's name.
const VerboseEnv = "FDPASS_TEST_VERBOSE"

// DefaultTimeout bounds Expect when Options.Timeout is zero.
const DefaultTimeout = 60 * time.Second

// roles maps a role to the function that plays it. Test files fill it
// while the package's variables are initialised, before TestMain runs.
var roles = map[string]func() error{}

// Register makes f the role named role; it returns true so that a test file
// can register at package level with var _ = Register(...). f runs in the
// child after the warm-up; returning an error fails the child (exit status
// 1, the error on stderr). Registering a role twice panics.
func Register(role string, f func() error) bool {
	if _, ok := roles[role]; ok {
		panic("childtest: role " + role + " registered twice")
	}
	roles[role] = f
	return true
}

// Role returns the role this process plays, or "" in the test process
// itself.
func Role() string { return os.Getenv(Env) }

// Main is a TestMain: in a child it plays the role Env names and exits (2
// for a role nobody registered); otherwise it runs the tests.
func Main(m *testing.M) {
	role := Role()
	if role == "" {
		fdtest.WarmUp()
		os.Exit(m.Run())
	}
	f, ok := roles[role]
	if !ok {
		fmt.Fprintf(os.Stderr, "childtest: unknown role %q\n", role)
		os.Exit(2)
	}
	fdtest.WarmUp()
	if err := f(); err != nil {
		fmt.Fprintf(os.Stderr, "child %s (pid %d): %v\n", role, os.Getpid(), err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Options describe how a child starts. The zero value runs the test binary
// itself, with the test's environment and no extra descriptors.
type Options struct {
	// Bin is the binary to run; empty means the running test binary. A
	// copy of it plays the same roles.
	Bin string
	// Args are Bin's arguments; nil means "-test.run=^$", which a test
	// binary needs to run no test in a role. A program that is not a test
	// binary (a tool the test checks against) takes its own.
	Args []string
	// Prefix, if set, is a command that runs the binary: the child is
	// Prefix..., Bin, Args... (a shell that sets a variable and execs
	// "$0" "$@", or a launcher such as systemd-socket-activate).
	Prefix []string
	// Env is added to the environment, after the role.
	Env []string
	// Unset names variables of the test's environment that the child must
	// not inherit.
	Unset []string
	// Files become the child's descriptors 3, 4, ...; the child gets
	// duplicates, so the caller closes its own when it likes.
	Files []*os.File
	// SysProcAttr is the child's (another uid, a new namespace, ...).
	SysProcAttr *syscall.SysProcAttr
	// Stderr, when true, reads the child's stderr as lines too, in the
	// order they arrive with its stdout. Otherwise stderr goes to the
	// test's stderr.
	Stderr bool
	// Timeout bounds each Expect; zero means DefaultTimeout.
	Timeout time.Duration
}

// Child is a running child process.
type Child struct {
	// Cmd is the child's command; Cmd.Process signals it.
	Cmd *exec.Cmd
	// Name is the role and PID, for messages: "role[pid]".
	Name string

	t       testing.TB
	timeout time.Duration
	out     *lineBuffer

	once sync.Once
	err  error
}

// Start runs the test binary (or o.Bin) again as role; with an empty role,
// o.Bin runs as itself. The child's stdout is read line by line for
// Expect and Output. When the test ends, a child
// that is still running is killed and waited for.
func Start(t testing.TB, role string, o Options) *Child {
	t.Helper()
	cmd := Command(role, o)
	c := &Child{Cmd: cmd, t: t, timeout: o.Timeout, out: newLineBuffer()}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	cmd.Stdout = c.out
	cmd.Stderr = os.Stderr
	if o.Stderr {
		cmd.Stderr = c.out
	}
	verbose := os.Getenv(VerboseEnv) != ""
	if verbose {
		c.out.setEcho(cmd.Path)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child %s: %v", role, err)
	}
	name := role
	if name == "" {
		name = filepath.Base(cmd.Path)
	}
	c.Name = fmt.Sprintf("%s[%d]", name, cmd.Process.Pid)
	if verbose {
		c.out.setEcho(c.Name)
	}
	// Reaped as soon as it exits, so that Expect learns of the end.
	go c.Wait()
	t.Cleanup(func() {
		// A child the test stopped must run to die.
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		c.Wait()
	})
	return c
}

// Command returns the command that Start runs, for a child that has no
// testing.TB to start its own (a grandchild), or a test that runs the
// command its own way. The options' Stderr and Timeout do not apply; the
// command's output goes where the caller sets it.
func Command(role string, o Options) *exec.Cmd {
	bin := o.Bin
	if bin == "" {
		bin = os.Args[0]
	}
	args := o.Args
	if args == nil {
		args = []string{"-test.run=^$"}
	}
	argv := slices.Concat(o.Prefix, []string{bin}, args)
	cmd := exec.Command(argv[0], argv[1:]...)
	env := environ(o.Unset)
	if role != "" {
		env = append(env, Env+"="+role)
	}
	cmd.Env = append(env, o.Env...)
	cmd.ExtraFiles = o.Files
	cmd.SysProcAttr = o.SysProcAttr
	return cmd
}

// environ is the test's environment without the variables unset names,
// and without a role of its own.
func environ(unset []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k != Env && !slices.Contains(unset, k) {
			env = append(env, kv)
		}
	}
	return env
}

// Pid returns the child's process ID.
func (c *Child) Pid() int { return c.Cmd.Process.Pid }

// Expect returns the first line not returned before that contains s,
// skipping the others, and fails the test if the child ends, or the
// timeout passes, without printing one.
func (c *Child) Expect(s string) string {
	c.t.Helper()
	timeout := time.NewTimer(c.timeout)
	defer timeout.Stop()
	for {
		line, ok, wait := c.out.next()
		switch {
		case ok:
			if strings.Contains(line, s) {
				return line
			}
			continue
		case wait == nil:
			c.t.Fatalf("%s ended without saying %q: %v\n%s", c.Name, s, c.Wait(), c.log())
		}
		select {
		case <-wait:
		case <-timeout.C:
			c.t.Fatalf("%s did not say %q within %v\n%s", c.Name, s, c.timeout, c.log())
		}
	}
}

// Output returns every line the child has printed so far.
func (c *Child) Output() []string { return c.out.all() }

func (c *Child) log() string { return strings.Join(c.Output(), "\n") }

// Wait waits for the child to exit, and for its output to end, and returns
// its exit error. It may be called more than once, from any goroutine.
func (c *Child) Wait() error {
	c.once.Do(func() {
		c.err = c.Cmd.Wait()
		c.out.end()
	})
	return c.err
}

// MustExit waits for the child and fails the test, with the child's
// output, unless it exits with status 0. Call it from the test's
// goroutine.
func (c *Child) MustExit() {
	c.t.Helper()
	if err := c.Wait(); err != nil {
		c.t.Fatalf("%s: %v\n%s", c.Name, err, c.log())
	}
}

// lineBuffer collects what a child writes as lines, for any number of
// readers, without ever blocking the child.
type lineBuffer struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	read    int           // lines handed out by next
	changed chan struct{} // closed and replaced when a line arrives or the output ends
	ended   bool
	echo    string // the child's name, when lines go to stderr too
}

func newLineBuffer() *lineBuffer { return &lineBuffer{changed: make(chan struct{})} }

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.partial = append(b.partial, p...)
	for {
		i := bytes.IndexByte(b.partial, '\n')
		if i < 0 {
			break
		}
		b.add(string(b.partial[:i]))
		b.partial = b.partial[i+1:]
	}
	return len(p), nil
}

// add appends a line; called with mu held.
func (b *lineBuffer) add(line string) {
	if b.echo != "" {
		fmt.Fprintf(os.Stderr, "%s: %s\n", b.echo, line)
	}
	b.lines = append(b.lines, line)
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *lineBuffer) setEcho(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.echo = name
}

// end marks the end of the output: the child has exited and os/exec has
// copied everything it wrote.
func (b *lineBuffer) end() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ended {
		return
	}
	if len(b.partial) > 0 {
		b.add(string(b.partial))
		b.partial = nil
	}
	b.ended = true
	close(b.changed)
}

// next returns the next line not handed out yet; if there is none, a
// channel that is closed when that may have changed, or nil once the
// output has ended.
func (b *lineBuffer) next() (line string, ok bool, wait <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.read < len(b.lines) {
		b.read++
		return b.lines[b.read-1], true, nil
	}
	if b.ended {
		return "", false, nil
	}
	return "", false, b.changed
}

func (b *lineBuffer) all() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.lines)
}
