package main_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/proc"
)

const (
	clients = 1000
	// exchangeTimeout bounds each line's exchange: a takeover that holds
	// the connections for longer fails the exchange.
	exchangeTimeout = 10 * time.Second
)

// client is one chat client: it sends numbered lines, one at a time, each
// in two writes, and checks that every answer carries its nickname, the
// session's count and the line, in order.
type client struct {
	id      int
	c       net.Conn
	r       *bufio.Reader
	nick    string
	count   int
	gen     atomic.Int64 // generation of the last answer
	lines   atomic.Int64 // lines answered
	slowest atomic.Int64 // the slowest exchange, in nanoseconds

	mu  sync.Mutex
	err error // the first failure; the client stops at it
}

// fail records the failure that stops the client.
func (cl *client) fail(err error) {
	cl.mu.Lock()
	cl.err = err
	cl.mu.Unlock()
}

// failure returns the failure that stopped the client, if any.
func (cl *client) failure() error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.err
}

func (cl *client) exchange(line string) error {
	start := time.Now()
	if err := cl.c.SetDeadline(start.Add(exchangeTimeout)); err != nil {
		return err
	}
	cut := len(line) / 2
	if _, err := io.WriteString(cl.c, line[:cut]); err != nil {
		return err
	}
	if _, err := io.WriteString(cl.c, line[cut:]+"\n"); err != nil {
		return err
	}
	cl.count++
	ans, err := cl.r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("client %d, line %d: %w", cl.id, cl.count, err)
	}
	f := strings.SplitN(strings.TrimSuffix(ans, "\n"), " ", 4)
	if len(f) != 4 || f[0] != cl.nick || f[1] != strconv.Itoa(cl.count) || f[3] != line {
		return fmt.Errorf("client %d: answer %q, want %q %d <gen> %q", cl.id, ans, cl.nick, cl.count, line)
	}
	g, err := strconv.Atoi(f[2])
	if err != nil {
		return fmt.Errorf("client %d: answer %q", cl.id, ans)
	}
	cl.gen.Store(int64(g))
	cl.lines.Add(1)
	if d := int64(time.Since(start)); d > cl.slowest.Load() {
		cl.slowest.Store(d) // only this client's goroutine stores
	}
	return nil
}

func (cl *client) run(stop <-chan struct{}) {
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		if err := cl.exchange(fmt.Sprintf("line %d from %s", seq, cl.nick)); err != nil {
			cl.fail(err)
			return
		}
	}
}

// awaitAll polls until cond holds for every client, or fails.
func awaitAll(t *testing.T, cls []*client, what string, cond func(*client) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		n := 0
		for _, cl := range cls {
			if cond(cl) {
				n++
			}
		}
		if n == len(cls) {
			return
		}
		if n, first := failures(cls); n > 0 {
			t.Fatalf("%s: %d clients failed; first: %v", what, n, first)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d clients", what, n, len(cls))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// failures counts the clients that failed and returns the first failure.
func failures(cls []*client) (n int, first error) {
	for _, cl := range cls {
		if err := cl.failure(); err != nil {
			if n == 0 {
				first = err
			}
			n++
		}
	}
	return n, first
}

// checkExit waits for an instance to exit after a takeover and checks
// that it closed every descriptor it opened.
func checkExit(t *testing.T, in *proc.Instance) {
	t.Helper()
	line, err := in.Await("exit ", 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fds := strings.Split(proc.Field(line, "fds"), "/")
	if len(fds) != 2 || fds[0] != fds[1] {
		t.Errorf("instance %d leaked descriptors: %s", in.PID(), line)
	}
	if s := proc.Field(line, "stayed"); s != "0" {
		t.Errorf("instance %d kept connections: %s", in.PID(), line)
	}
	if err := in.Wait(10 * time.Second); err != nil {
		t.Errorf("instance %d: %v", in.PID(), err)
	}
}

// TestSessionsSurviveTakeovers connects 1,000 clients, each sending
// numbered lines without pause, and hands the server over five times; then
// a successor is killed in the middle of the migration, and the one after
// it takes over. No client may see an error, a missing, repeated or
// reordered answer, or a session that lost its nickname or count.
func TestSessionsSurviveTakeovers(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < 2*clients+100 {
		if lim.Max < 2*clients+100 {
			t.Skipf("RLIMIT_NOFILE %d is too low for %d clients", lim.Max, clients)
		}
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	dir := t.TempDir()
	bin := proc.BuildT(t, dir, "github.com/fdpass/fdpass/examples/chat")
	args := []string{"-graceful", filepath.Join(dir, "handoff.sock"), "-listen", "127.0.0.1:0", "-timeout", "20s"}
	start := func(extra ...string) *proc.Instance {
		t.Helper()
		return proc.StartT(t, bin, append(append([]string(nil), args...), extra...)...)
	}
	current := start()
	line, err := current.Await("ready ", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	addr := proc.Field(line, "addr")

	cls := make([]*client, clients)
	for i := range cls {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cls[i] = &client{id: i, c: c, r: bufio.NewReader(c), nick: "anon"}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, cl := range cls {
		wg.Go(func() {
			cl.nick = fmt.Sprintf("user%d", cl.id)
			if err := cl.exchange("NICK " + cl.nick); err != nil {
				cl.fail(err)
				return
			}
			cl.run(stop)
		})
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	awaitAll(t, cls, "generation 1 answers", func(cl *client) bool { return cl.lines.Load() >= 3 })

	gen := 1
	takeover := func() {
		t.Helper()
		gen++
		next := start()
		line, err := next.Await("ready ", 60*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if g := proc.Field(line, "generation"); g != strconv.Itoa(gen) {
			t.Fatalf("generation %s took over, want %d: %s", g, gen, line)
		}
		t.Logf("takeover: %s", line)
		checkExit(t, current)
		current = next
		awaitAll(t, cls, fmt.Sprintf("generation %d answers", gen), func(cl *client) bool { return cl.gen.Load() == int64(gen) })
	}
	for range 5 {
		takeover()
	}

	// A successor killed after it received the connections, before it
	// acknowledged them: the running instance resumes every one.
	doomed := start("-stall-migration")
	line, err = doomed.Await("migrating ", 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if n := proc.Field(line, "conns"); n != strconv.Itoa(clients) {
		t.Errorf("the successor received %s connections, want %d", n, clients)
	}
	doomed.Kill()
	marks := make([]int64, len(cls))
	for i, cl := range cls {
		marks[i] = cl.lines.Load()
	}
	awaitAll(t, cls, "answers after the rollback", func(cl *client) bool {
		return cl.lines.Load() >= marks[cl.id]+3 && cl.gen.Load() == int64(gen)
	})
	if current.Exited() {
		t.Fatal("the running instance exited after a failed migration")
	}
	takeover()

	close(stop)
	wg.Wait()
	if n, first := failures(cls); n > 0 {
		t.Errorf("%d clients failed; first: %v", n, first)
	}
	total, slowest := int64(0), time.Duration(0)
	for _, cl := range cls {
		total += cl.lines.Load()
		slowest = max(slowest, time.Duration(cl.slowest.Load()))
	}
	t.Logf("%d clients, %d lines answered across %d generations; slowest exchange %v", len(cls), total, gen, slowest)
	for _, cl := range cls {
		cl.c.Close()
	}
}
