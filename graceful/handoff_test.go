//go:build linux

package graceful_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/unixmsg"
	"golang.org/x/sys/unix"
)

// Environment of the "gen" role: one generation of a small service with a
// TCP listener, a UDP socket and a unix listener, each answering a request
// with its generation and pid.
const (
	envPath    = "GT_PATH"    // handoff socket
	envUnix    = "GT_UNIX"    // unix listener path
	envTimeout = "GT_TIMEOUT" // Options.Timeout
	envMode    = "GT_MODE"    // "hold": receive, then wait to be killed
)

var _ = registerRestartRole("gen", roleGen)

func childLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

func roleGen() error {
	before, err := fd.Count()
	if err != nil {
		return err
	}
	timeout, err := time.ParseDuration(os.Getenv(envTimeout))
	if err != nil {
		return err
	}
	p, err := graceful.New(graceful.Options{Path: os.Getenv(envPath), Timeout: timeout, Logger: childLogger()})
	if err != nil {
		return err
	}
	ln, err := p.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	pc, err := p.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	uln, err := p.Listen("unix", os.Getenv(envUnix))
	if err != nil {
		return err
	}
	gen := p.Generation()
	ids := socketID(ln) + "," + socketID(pc) + "," + socketID(uln)
	if os.Getenv(envMode) == "hold" {
		// Adopted, never serving, never READY: the test kills or stops
		// this process.
		say("received gen=%d ids=%s", gen, ids)
		time.Sleep(time.Hour)
		return errors.New("not killed")
	}
	reply := fmt.Sprintf("gen=%d pid=%d\n", gen, os.Getpid())
	var wg sync.WaitGroup
	serveStream := func(l net.Listener) {
		wg.Go(func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				wg.Go(func() {
					defer c.Close()
					c.SetDeadline(time.Now().Add(10 * time.Second))
					if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
						return
					}
					io.WriteString(c, reply)
				})
			}
		})
	}
	serveStream(ln)
	serveStream(uln)
	wg.Go(func() {
		buf := make([]byte, 64)
		for {
			_, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(reply), a)
		}
	})
	if err := p.Ready(); err != nil {
		return err
	}
	say("ready gen=%d pid=%d inherited=%v tcp=%s udp=%s ids=%s", gen, os.Getpid(), p.Inherited(), ln.Addr(), pc.LocalAddr(), ids)
	<-p.Exit()
	say("exiting gen=%d handedoff=%v", gen, p.HandedOff())
	// Stop taking new work; finish what was taken.
	ln.Close()
	uln.Close()
	pc.SetReadDeadline(time.Unix(1, 0))
	wg.Wait()
	pc.Close()
	p.Close()
	if err := awaitFDCount(before); err != nil {
		return err
	}
	say("exit gen=%d", gen)
	return nil
}

// socketID names the socket behind v by its inode.
func socketID(v any) string {
	id, err := fd.IdentifyConn(v)
	if err != nil {
		return "?"
	}
	return fmt.Sprint(id.Ino)
}

// hammer sends requests to a generation chain until stopped, and counts
// what failed.
type hammer struct {
	t      testing.TB
	stop   chan struct{}
	wg     sync.WaitGroup
	ok     atomic.Int64
	failed atomic.Int64
	polls  atomic.Int64
	mu     sync.Mutex
	gens   map[string]int
	errs   []error
}

func startHammer(t testing.TB, tcpAddr, udpAddr, handoffPath string) *hammer {
	h := &hammer{t: t, stop: make(chan struct{}), gens: map[string]int{}}
	for range 4 {
		h.loop(2*time.Millisecond, func() (string, error) { return streamRequest("tcp", tcpAddr) })
	}
	h.loop(5*time.Millisecond, func() (string, error) { return udpRequest(udpAddr) })
	if handoffPath != "" {
		h.loop(5*time.Millisecond, func() (string, error) {
			c, err := net.DialTimeout("unixpacket", handoffPath, 5*time.Second)
			if err != nil {
				return "", fmt.Errorf("handoff socket: %w", err)
			}
			c.Close()
			h.polls.Add(1)
			return "", nil
		})
	}
	t.Cleanup(h.halt)
	return h
}

func (h *hammer) loop(every time.Duration, req func() (string, error)) {
	h.wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
			gen, err := req()
			h.mu.Lock()
			if err != nil {
				h.failed.Add(1)
				if len(h.errs) < 10 {
					h.errs = append(h.errs, err)
				}
			} else if gen != "" {
				h.ok.Add(1)
				h.gens[gen]++
			}
			h.mu.Unlock()
		}
	})
}

// served returns how many requests generation gen answered.
func (h *hammer) served(gen string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gens[gen]
}

// awaitServed waits until generation gen has answered n requests.
func (h *hammer) awaitServed(gen string, n int) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for h.served(gen) < n {
		if time.Now().After(deadline) {
			h.t.Fatalf("generation %s answered %d requests, want %d", gen, h.served(gen), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func (h *hammer) halt() {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	h.wg.Wait()
}

// check stops the hammer and fails the test if any request failed.
func (h *hammer) check() {
	h.t.Helper()
	h.halt()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.t.Logf("requests: %d answered, %d failed; by generation %v; handoff socket polled %d times", h.ok.Load(), h.failed.Load(), h.gens, h.polls.Load())
	if h.failed.Load() != 0 {
		h.t.Errorf("%d requests failed; first errors: %v", h.failed.Load(), h.errs)
	}
	if h.ok.Load() == 0 {
		h.t.Error("no request answered")
	}
}

func streamRequest(network, addr string) (string, error) {
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("%s %s: reading reply: %w", network, addr, err)
	}
	return field(line, "gen"), nil
}

func udpRequest(addr string) (string, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return "", err
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return "", fmt.Errorf("udp %s: %w", addr, err)
	}
	return field(string(buf[:n]), "gen"), nil
}

// genEnv is the environment of a "gen" child.
func genEnv(dir string, timeout time.Duration, extra ...string) []string {
	return append([]string{
		envPath + "=" + filepath.Join(dir, "handoff.sock"),
		envUnix + "=" + filepath.Join(dir, "app.sock"),
		envTimeout + "=" + timeout.String(),
	}, extra...)
}

// TestRestartChain runs six generations, each its own process, while
// clients hammer the TCP listener (and the UDP socket, and the handoff
// socket): not one request may fail.
func TestRestartChain(t *testing.T) {
	restartCheckLeaks(t)
	dir := t.TempDir()
	prev := startRestartChild(t, "", "gen", nil, genEnv(dir, 10*time.Second)...)
	first := prev.expect("ready gen=1 ")
	if field(first, "inherited") != "false" {
		t.Fatalf("generation 1 inherited: %s", first)
	}
	tcpAddr, udpAddr, ids := field(first, "tcp"), field(first, "udp"), field(first, "ids")
	h := startHammer(t, tcpAddr, udpAddr, filepath.Join(dir, "handoff.sock"))
	h.awaitServed("1", 20)
	const last = 6
	for g := 2; g <= last; g++ {
		next := startRestartChild(t, "", "gen", nil, genEnv(dir, 10*time.Second)...)
		line := next.expect(fmt.Sprintf("ready gen=%d ", g))
		if field(line, "inherited") != "true" || field(line, "tcp") != tcpAddr || field(line, "udp") != udpAddr || field(line, "ids") != ids {
			t.Errorf("generation %d did not adopt the same sockets: %s; generation 1: %s", g, line, first)
		}
		prev.expect(fmt.Sprintf("exit gen=%d", g-1))
		prev.mustExit()
		// The unix listener moved too.
		gen, err := streamRequest("unix", filepath.Join(dir, "app.sock"))
		if err != nil || gen != fmt.Sprint(g) {
			t.Errorf("unix listener after generation %d took over: answered by %q, %v", g, gen, err)
		}
		h.awaitServed(fmt.Sprint(g), 20)
		prev = next
	}
	h.check()
	// The last generation dies without a word: its socket file is stale,
	// and a new first generation replaces it.
	prev.cmd.Process.Kill()
	prev.wait()
	p, err := graceful.New(graceful.Options{Path: filepath.Join(dir, "handoff.sock")})
	if err != nil {
		t.Fatalf("New over the socket file of a killed generation: %v", err)
	}
	if p.Inherited() || p.Generation() != 1 {
		t.Errorf("after the chain died: inherited %v, generation %d", p.Inherited(), p.Generation())
	}
	p.Close()
}

var _ = registerRestartRole("partial", rolePartial)

// rolePartial plays a successor that says HELLO, reads the first message
// of the OFFER batch, and hangs up in the middle of the batch.
func rolePartial() error {
	uc, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: os.Getenv(envPath), Net: "unixpacket"})
	if err != nil {
		return err
	}
	dup, err := fd.Dup(uc)
	if err != nil {
		return err
	}
	c, err := unixmsg.NewConn(uc, &unixmsg.Options{NoAck: true})
	if err != nil {
		return err
	}
	hello, err := handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgHello, MinVersion: 1, MaxVersion: 1})
	if err != nil {
		return err
	}
	var b unixmsg.Batch
	b.SetPayload(hello)
	if err := c.Send(&b); err != nil {
		return err
	}
	if err := unix.SetNonblock(dup, false); err != nil {
		return err
	}
	buf := make([]byte, 1<<17)
	oob := make([]byte, unix.CmsgSpace(253*4))
	n, oobn, _, _, err := unix.Recvmsg(dup, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return err
	}
	say("partial bytes=%d control=%d", n, oobn)
	c.Close()
	unix.Close(dup)
	return nil
}

// TestRestartRollback: a successor that is killed after receiving the
// descriptors, one that stops past the handoff timeout, and one that hangs
// up in the middle of the batch each leave the predecessor serving without
// a failed request; then a new successor takes over.
func TestRestartRollback(t *testing.T) {
	cases := []struct {
		name string
		fail func(t *testing.T, dir string)
	}{
		{"killed", func(t *testing.T, dir string) {
			s := startRestartChild(t, "", "gen", nil, genEnv(dir, 10*time.Second, envMode+"=hold")...)
			s.expect("received gen=2 ")
			s.cmd.Process.Kill()
			s.wait()
		}},
		{"stopped", func(t *testing.T, dir string) {
			s := startRestartChild(t, "", "gen", nil, genEnv(dir, 10*time.Second, envMode+"=hold")...)
			s.expect("received gen=2 ")
			s.cmd.Process.Signal(syscall.SIGSTOP)
			t.Cleanup(func() { s.cmd.Process.Kill() })
		}},
		{"hangup", func(t *testing.T, dir string) {
			s := startRestartChild(t, "", "partial", nil, genEnv(dir, 10*time.Second)...)
			s.expect("partial ")
			s.mustExit()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			restartCheckLeaks(t)
			dir := t.TempDir()
			// The predecessor waits a second for READY.
			pred := startRestartChild(t, "", "gen", nil, genEnv(dir, time.Second)...)
			first := pred.expect("ready gen=1 ")
			h := startHammer(t, field(first, "tcp"), field(first, "udp"), "")
			h.awaitServed("1", 10)
			tc.fail(t, dir)
			pred.expect("handoff rolled back")
			n := h.served("1")
			h.awaitServed("1", n+20)
			next := startRestartChild(t, "", "gen", nil, genEnv(dir, 10*time.Second)...)
			line := next.expect("ready gen=2 ")
			if field(line, "ids") != field(first, "ids") {
				t.Errorf("successor did not adopt the same sockets: %s; predecessor: %s", line, first)
			}
			pred.expect("exit gen=1")
			pred.mustExit()
			h.awaitServed("2", 10)
			h.check()
			next.cmd.Process.Kill()
			next.wait()
		})
	}
}

// TestRestartInProcess hands over between two Processes of one process: the
// quick check of the API, and of the descriptors it leaves behind.
func TestRestartInProcess(t *testing.T) {
	restartCheckLeaks(t)
	path := filepath.Join(t.TempDir(), "h.sock")
	p1, err := graceful.New(graceful.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	ln1, err := p1.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln1.Close()
	extra, err := p1.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	fpath := filepath.Join(t.TempDir(), "log")
	f1, err := p1.OpenFile(fpath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	if err := p1.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := p1.Ready(); !errors.Is(err, graceful.ErrReady) {
		t.Errorf("second Ready: %v, want ErrReady", err)
	}
	p2, err := graceful.New(graceful.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if !p2.Inherited() || p2.Generation() != 2 {
		t.Errorf("successor: inherited %v, generation %d", p2.Inherited(), p2.Generation())
	}
	ln2, err := p2.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if ln2.Addr().String() != ln1.Addr().String() || socketID(ln1) != socketID(ln2) {
		t.Errorf("successor listens on %s, predecessor on %s", ln2.Addr(), ln1.Addr())
	}
	f2, err := p2.OpenFile(fpath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if socketID(f1) != socketID(f2) {
		t.Error("file not inherited")
	}
	if _, err := p2.Listen("udp", "127.0.0.1:0"); !errors.Is(err, graceful.ErrNetwork) {
		t.Errorf("Listen udp: %v, want ErrNetwork", err)
	}
	if _, err := p2.ListenPacket("tcp", "127.0.0.1:0"); !errors.Is(err, graceful.ErrNetwork) {
		t.Errorf("ListenPacket tcp: %v, want ErrNetwork", err)
	}
	udp, err := p2.ListenPacket("udp", "127.0.0.1:0") // nothing to inherit
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	select {
	case <-p1.Exit():
		t.Fatal("predecessor exited before READY")
	default:
	}
	if err := p2.Ready(); err != nil {
		t.Fatal(err)
	}
	<-p1.Exit()
	if !p1.HandedOff() {
		t.Error("predecessor: HandedOff false after Exit")
	}
	p1.Close()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("socket file after the predecessor closed: %v", err)
	}
	// The successor answers the next one.
	c, err := net.Dial("unixpacket", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	p2.Close()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after the last generation closed: %v", err)
	}
}

// TestRestartHostileSuccessor: a peer that speaks the wrong version or
// garbage gets an ERROR, and the predecessor keeps serving.
func TestRestartHostileSuccessor(t *testing.T) {
	restartCheckLeaks(t)
	path := filepath.Join(t.TempDir(), "h.sock")
	p, err := graceful.New(graceful.Options{Path: path, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ln, err := p.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := p.Ready(); err != nil {
		t.Fatal(err)
	}
	// The Process duplicates its descriptors before it answers the first
	// peer: let it, before counting.
	exchange(t, path, []byte("hello"))
	for _, tc := range []struct {
		name    string
		payload []byte
		want    error
	}{
		{"version", mustAppend(t, handoffmsg.Message{Type: handoffmsg.MsgHello, MinVersion: 2, MaxVersion: 3}), graceful.ErrVersion},
		{"garbage", []byte("GET / HTTP/1.0\r\n\r\n"), graceful.ErrMalformed},
		{"ready first", mustAppend(t, handoffmsg.Message{Type: handoffmsg.MsgReady}), graceful.ErrMalformed},
		{"unknown type", append([]byte("FDHO\x01\x09\x00\x00"), nil...), graceful.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := mustCount(t)
			m := exchange(t, path, tc.payload)
			herr := m.Err()
			if m.Type != handoffmsg.MsgError || !errors.Is(herr, tc.want) {
				t.Errorf("answer %+v, want an ERROR matching %v", m, tc.want)
			}
			if err := awaitFDCount(before); err != nil {
				t.Error(err)
			}
		})
	}
	if p.HandedOff() {
		t.Fatal("handed off to a hostile peer")
	}
	// Still serving handoffs.
	p2, err := graceful.New(graceful.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	ln2, err := p2.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if err := p2.Ready(); err != nil {
		t.Fatal(err)
	}
	<-p.Exit()
	if ln2.Addr().String() != ln.Addr().String() {
		t.Errorf("successor listens on %s, want %s", ln2.Addr(), ln.Addr())
	}
}

// exchange sends payload as a successor's first message and returns the
// answer, which must carry no descriptor.
func exchange(t *testing.T, path string, payload []byte) handoffmsg.Message {
	t.Helper()
	c, err := unixmsg.Dial("unixpacket", path, &unixmsg.Options{NoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var b unixmsg.Batch
	b.SetPayload(payload)
	if err := c.Send(&b); err != nil {
		t.Fatal(err)
	}
	r, err := c.Receive()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Len() != 0 {
		t.Errorf("got %d descriptors", r.Len())
	}
	m, err := handoffmsg.Parse(r.Payload())
	if err != nil {
		t.Fatal(err)
	}
	// The predecessor hangs up after its answer, and only then are the
	// descriptor counts of this process settled.
	if b, err := c.Receive(); !errors.Is(err, io.EOF) {
		if err == nil {
			b.Close()
		}
		t.Errorf("after the answer: %v, want EOF", err)
	}
	return m
}

func mustAppend(t testing.TB, m handoffmsg.Message) []byte {
	t.Helper()
	b, err := handoffmsg.Append(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustCount(t testing.TB) int {
	t.Helper()
	n, err := fd.Count()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRestartSocketFile: the socket file's mode, a stale file replaced, a
// live one or a file that is not a socket left alone.
func TestRestartSocketFile(t *testing.T) {
	restartCheckLeaks(t)
	t.Run("mode", func(t *testing.T) {
		for _, tc := range []struct {
			mode, want os.FileMode
		}{{0, 0o600}, {0o660, 0o660}} {
			path := filepath.Join(t.TempDir(), "h.sock")
			p, err := graceful.New(graceful.Options{Path: path, Mode: tc.mode})
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != tc.want {
				t.Errorf("Mode %o: socket file mode %v, want socket %o", tc.mode, st.Mode(), tc.want)
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 1 {
				t.Errorf("directory holds %d entries, want the socket only", len(entries))
			}
			p.Close()
		}
	})
	t.Run("stale", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "h.sock")
		l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		l.Close()
		p, err := graceful.New(graceful.Options{Path: path})
		if err != nil {
			t.Fatalf("stale socket file: %v", err)
		}
		defer p.Close()
		if p.Inherited() || p.Generation() != 1 {
			t.Errorf("inherited %v, generation %d", p.Inherited(), p.Generation())
		}
		c, err := net.Dial("unixpacket", path)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
	t.Run("not a socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "h.sock")
		os.WriteFile(path, []byte("precious"), 0o600)
		_, err := graceful.New(graceful.Options{Path: path})
		if !errors.Is(err, graceful.ErrNotSocket) {
			t.Errorf("New over a regular file: %v, want ErrNotSocket", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "precious" {
			t.Error("regular file changed")
		}
	})
	for _, network := range []string{"unixpacket", "unix"} {
		t.Run("live "+network, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "h.sock")
			l, err := net.Listen(network, path)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			var wg sync.WaitGroup
			defer wg.Wait()
			defer l.Close()
			wg.Go(func() {
				// Someone else's server: it hangs up on everyone.
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			})
			_, err = graceful.New(graceful.Options{Path: path, Timeout: 5 * time.Second})
			if !errors.Is(err, graceful.ErrAlreadyRunning) {
				t.Errorf("New over a live %s socket: %v, want ErrAlreadyRunning", network, err)
			}
			c, err := net.Dial(network, path)
			if err != nil {
				t.Fatalf("live socket stolen: %v", err)
			}
			c.Close()
		})
	}
	t.Run("live silent", func(t *testing.T) {
		// Someone else's server that never answers.
		path := filepath.Join(t.TempDir(), "h.sock")
		l, err := net.Listen("unixpacket", path)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		_, err = graceful.New(graceful.Options{Path: path, Timeout: 200 * time.Millisecond})
		if !errors.Is(err, graceful.ErrAlreadyRunning) {
			t.Errorf("New over a silent socket: %v, want ErrAlreadyRunning", err)
		}
	})
	t.Run("abstract", func(t *testing.T) {
		path := fmt.Sprintf("@fdpass-graceful-test-%d", os.Getpid())
		p, err := graceful.New(graceful.Options{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if err := p.Ready(); err != nil {
			t.Fatal(err)
		}
		p2, err := graceful.New(graceful.Options{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		defer p2.Close()
		if !p2.Inherited() {
			t.Error("abstract socket: no handoff")
		}
		if err := p2.Ready(); err != nil {
			t.Fatal(err)
		}
		<-p.Exit()
	})
}

var _ = registerRestartRole("otheruid", roleOtherUID)

// roleOtherUID runs as another uid and tries to take over; it must be
// refused without receiving a descriptor.
func roleOtherUID() error {
	before, err := fd.Count()
	if err != nil {
		return err
	}
	_, err = graceful.New(graceful.Options{
		Path:      os.Getenv(envPath),
		Timeout:   10 * time.Second,
		Authorize: func(graceful.Peer) error { return nil },
	})
	after, cerr := fd.Count()
	if cerr != nil {
		return cerr
	}
	if after != before {
		return fmt.Errorf("%d descriptors open before New, %d after", before, after)
	}
	switch {
	case err == nil:
		return errors.New("New succeeded as another uid")
	case errors.Is(err, graceful.ErrRefused) && errors.Is(err, graceful.ErrUnauthorized):
		say("refused uid=%d: %v", os.Getuid(), err)
	case errors.Is(err, os.ErrPermission):
		say("denied uid=%d: %v", os.Getuid(), err)
	default:
		return fmt.Errorf("New: unexpected error: %w", err)
	}
	return nil
}

// TestRestartOtherUID: a successor running as another uid is refused by
// the credential check (abstract socket) or by the file mode (0600).
func TestRestartOtherUID(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to start a child with another uid")
	}
	restartCheckLeaks(t)
	// The child runs as nobody: give it a copy of the test binary it may
	// execute.
	bindir, err := os.MkdirTemp("", "graceful-test")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(bindir)
	os.Chmod(bindir, 0o755)
	bin := filepath.Join(bindir, "graceful.test")
	if err := copyFile(os.Args[0], bin); err != nil {
		t.Fatal(err)
	}
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"abstract", fmt.Sprintf("@fdpass-graceful-uid-%d", os.Getpid()), "refused uid=65534"},
		{"file", filepath.Join(bindir, "h.sock"), "denied uid=65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := make(chan string, 100)
			p, err := graceful.New(graceful.Options{Path: tc.path, Logger: slog.New(chanHandler(logs))})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			ln, err := p.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if err := p.Ready(); err != nil {
				t.Fatal(err)
			}
			c := startRestartChild(t, bin, "otheruid", nobody, envPath+"="+tc.path)
			c.expect(tc.want)
			c.mustExit()
			if tc.name == "abstract" {
				awaitLine(t, logs, "refused successor")
			}
			if p.HandedOff() {
				t.Error("handed off to another uid")
			}
		})
	}
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// chanHandler is a slog.Handler that sends each record's message and
// attributes as a line.
type chanHandler chan string

func (h chanHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h chanHandler) Handle(_ context.Context, r slog.Record) error {
	var sb strings.Builder
	sb.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&sb, " %s=%v", a.Key, a.Value)
		return true
	})
	select {
	case h <- sb.String():
	default:
	}
	return nil
}
func (h chanHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h chanHandler) WithGroup(string) slog.Handler      { return h }

func awaitLine(t testing.TB, lines chan string, substr string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l := <-lines:
			if strings.Contains(l, substr) {
				return l
			}
		case <-timeout:
			t.Fatalf("no log line containing %q", substr)
		}
	}
}

// fakePredecessor listens on path like a predecessor, reads the HELLO of
// one successor, and lets act answer it.
func fakePredecessor(t *testing.T, path string, act func(c *unixmsg.Conn, self *net.UnixListener) error) chan error {
	t.Helper()
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	done := make(chan error, 1)
	go func() {
		defer l.Close()
		uc, err := l.AcceptUnix()
		if err != nil {
			done <- err
			return
		}
		c, err := unixmsg.NewConn(uc, nil)
		if err != nil {
			uc.Close()
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		b, err := c.Receive()
		if err != nil {
			done <- err
			return
		}
		b.Close()
		done <- act(c, l)
	}()
	return done
}

// offerBatch builds an OFFER batch: a TCP listener, and self as the
// handoff listener unless told otherwise.
func offerBatch(t *testing.T, self *net.UnixListener, items uint32, version uint16, handoff bool, tcp net.Listener) *unixmsg.Batch {
	b := new(unixmsg.Batch)
	if err := b.Add("0", tcp, unixmsg.MetaOf("role", "listener", "network", "tcp", "addr", "127.0.0.1:0"), nil); err != nil {
		t.Error(err)
	}
	if handoff {
		if err := b.Add("1", self, unixmsg.MetaOf("role", "handoff", "network", "unixpacket"), nil); err != nil {
			t.Error(err)
		}
	}
	payload, _ := handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgOffer, Version: version, Items: items, Generation: 7})
	b.SetPayload(payload)
	return b
}

// TestRestartHostilePredecessor: a predecessor that refuses, lies about its
// batch or stops answering leaves the successor with an error and not one
// descriptor more.
func TestRestartHostilePredecessor(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	send := func(b *unixmsg.Batch) func(*unixmsg.Conn, *net.UnixListener) error {
		return func(c *unixmsg.Conn, _ *net.UnixListener) error { defer b.Close(); return c.Send(b) }
	}
	for _, tc := range []struct {
		name string
		act  func(c *unixmsg.Conn, self *net.UnixListener) error
		want error
	}{
		{"error", func(c *unixmsg.Conn, _ *net.UnixListener) error {
			p, _ := handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgError, Code: handoffmsg.CodeUnauthorized, Reason: "go away"})
			var b unixmsg.Batch
			b.SetPayload(p)
			return c.Send(&b)
		}, graceful.ErrUnauthorized},
		{"garbage", func(c *unixmsg.Conn, _ *net.UnixListener) error {
			var b unixmsg.Batch
			b.SetPayload([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
			return c.Send(&b)
		}, graceful.ErrAlreadyRunning},
		{"count", func(c *unixmsg.Conn, self *net.UnixListener) error {
			return send(offerBatch(t, self, 5, 1, true, tcp))(c, self)
		}, graceful.ErrMalformed},
		{"no handoff listener", func(c *unixmsg.Conn, self *net.UnixListener) error {
			return send(offerBatch(t, self, 1, 1, false, tcp))(c, self)
		}, graceful.ErrMalformed},
		{"version", func(c *unixmsg.Conn, self *net.UnixListener) error {
			return send(offerBatch(t, self, 2, 2, true, tcp))(c, self)
		}, graceful.ErrVersion},
		{"no DONE", func(c *unixmsg.Conn, self *net.UnixListener) error {
			if err := send(offerBatch(t, self, 2, 1, true, tcp))(c, self); err != nil {
				return err
			}
			b, err := c.Receive() // READY
			if err != nil {
				return err
			}
			b.Close()
			return nil // and hang up
		}, graceful.ErrHandoff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			restartCheckLeaks(t)
			path := filepath.Join(t.TempDir(), "h.sock")
			done := fakePredecessor(t, path, tc.act)
			p, err := graceful.New(graceful.Options{Path: path, Timeout: 5 * time.Second})
			if err == nil {
				var ln net.Listener
				ln, err = p.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				if socketID(ln) != socketID(tcp) {
					t.Error("listener not inherited")
				}
				ln.Close()
				err = p.Ready()
				p.Close()
				if _, serr := os.Stat(path); serr != nil {
					t.Errorf("a failed successor removed the socket file: %v", serr)
				}
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
			if err := <-done; err != nil && tc.want != graceful.ErrMalformed && tc.want != graceful.ErrVersion {
				t.Logf("fake predecessor: %v", err)
			}
		})
	}
}

// TestRestartSlowSuccessor: a successor that says READY after the
// predecessor's timeout learns why it failed; the predecessor keeps
// serving and hands over to the next one.
func TestRestartSlowSuccessor(t *testing.T) {
	restartCheckLeaks(t)
	path := filepath.Join(t.TempDir(), "h.sock")
	logs := make(chan string, 100)
	p1, err := graceful.New(graceful.Options{Path: path, Timeout: 200 * time.Millisecond, Logger: slog.New(chanHandler(logs))})
	if err != nil {
		t.Fatal(err)
	}
	defer p1.Close()
	ln1, err := p1.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln1.Close()
	if err := p1.Ready(); err != nil {
		t.Fatal(err)
	}
	p2, err := graceful.New(graceful.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	ln2, err := p2.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	awaitLine(t, logs, "rolled back")
	err = p2.Ready()
	if !errors.Is(err, graceful.ErrHandoff) || !errors.Is(err, graceful.ErrRefused) || !errors.Is(err, graceful.ErrTimeout) {
		t.Errorf("late READY: %v, want ErrHandoff with a timeout ERROR", err)
	}
	ln2.Close()
	p2.Close()
	if p1.HandedOff() {
		t.Fatal("predecessor handed off to a late successor")
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the late successor removed the socket file: %v", err)
	}
	p3, err := graceful.New(graceful.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer p3.Close()
	ln3, err := p3.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln3.Close()
	if err := p3.Ready(); err != nil {
		t.Fatal(err)
	}
	<-p1.Exit()
	if socketID(ln3) != socketID(ln1) {
		t.Error("listener not inherited")
	}
}
