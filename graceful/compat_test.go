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
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/unixmsg"
)

// The handler API's tests re-run the test binary as a child process with
// -test.run=^TestCompatChild$ and compatChildEnv naming the child's role;
// they leave TestMain alone.
const compatChildEnv = "FDPASS_GRACEFUL_COMPAT_CHILD"

// compatRoles maps a child role to the function that plays it. A role
// returns an error to fail the child; it talks to the parent through
// stdout lines starting with "compat:" and takes its parameters from the
// environment.
var compatRoles = map[string]func() error{
	"server":            compatRoleServer,
	"client":            compatRoleClient,
	"client-expect-err": compatRoleClientExpectErr,
	"hangup":            compatRoleHangup,
	"hangup-after-read": compatRoleHangupAfterRead,
}

// TestCompatChild is not a test: it plays a child role when a compat test
// re-runs the binary, and skips otherwise.
func TestCompatChild(t *testing.T) {
	role := os.Getenv(compatChildEnv)
	if role == "" {
		t.Skip("helper process for the handler API's cross-process tests")
	}
	f, ok := compatRoles[role]
	if !ok {
		fmt.Fprintf(os.Stderr, "compat child: unknown role %q\n", role)
		os.Exit(2)
	}
	compatWarmUp()
	if err := f(); err != nil {
		fmt.Fprintf(os.Stderr, "compat child %s: %v\n", role, err)
		os.Exit(1)
	}
	os.Exit(0)
}

var compatWarm sync.Once

// compatWarmUp makes the runtime open what it opens once (the network
// poller and so on), so that descriptor counts compare like with like.
func compatWarmUp() {
	compatWarm.Do(func() {
		if a, b, err := unixmsg.Pair(nil); err == nil {
			a.Close()
			b.Close()
		}
		if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
			ln.Close()
		}
		if pc, err := net.ListenPacket("udp", "127.0.0.1:0"); err == nil {
			pc.Close()
		}
		_ = exec.Command("/bin/true").Run()
	})
}

// compatCount returns the process's open-descriptor count.
func compatCount(t testing.TB) int {
	t.Helper()
	n, err := fd.Count()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// compatAwaitCount waits, up to a deadline, for the process's open
// descriptors to number want; descriptors closed by goroutines that are
// still finishing get the time to go.
func compatAwaitCount(want int) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := fd.Count()
		if err != nil {
			return err
		}
		if n == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("descriptor leak: %d open, want %d", n, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// compatCheckLeaks fails t unless, when it ends, the process has as many
// descriptors open as now.
func compatCheckLeaks(t testing.TB) {
	t.Helper()
	compatWarmUp()
	before := compatCount(t)
	t.Cleanup(func() {
		if err := compatAwaitCount(before); err != nil {
			t.Error(err)
		}
	})
}

// compatChild is a running child process and the "compat:" lines it
// prints.
type compatChild struct {
	t      testing.TB
	role   string
	cmd    *exec.Cmd
	lines  chan string
	waited bool
	err    error
}

func compatStart(t testing.TB, role string, env ...string) *compatChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCompatChild$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), compatChildEnv+"="+role), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &compatChild{t: t, role: role, cmd: cmd, lines: make(chan string, 16)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l, ok := strings.CutPrefix(sc.Text(), "compat: "); ok {
				c.lines <- l
			}
		}
	}()
	t.Cleanup(func() {
		if !c.waited {
			cmd.Process.Kill()
			c.wait()
		}
	})
	return c
}

// line returns the child's next line.
func (c *compatChild) line() string {
	c.t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			c.t.Fatalf("child %s: exited (%v) before printing what was expected", c.role, c.wait())
		}
		return l
	case <-time.After(30 * time.Second):
		c.t.Fatalf("child %s: no line in 30s", c.role)
	}
	return ""
}

// wait waits for the child to exit and returns its error.
func (c *compatChild) wait() error {
	if !c.waited {
		c.waited = true
		for range c.lines {
		}
		c.err = c.cmd.Wait()
	}
	return c.err
}

// mustExit fails the test unless the child exits successfully.
func (c *compatChild) mustExit() {
	c.t.Helper()
	if err := c.wait(); err != nil {
		c.t.Fatalf("child %s: %v", c.role, err)
	}
}

func compatSay(format string, args ...any) {
	fmt.Printf("compat: "+format+"\n", args...)
}

// compatSockPath returns a path for a unix socket in a fresh directory.
func compatSockPath(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "h.sock")
}

// TestCompatCrossProcess: a server process hands a TCP listener, a UDP
// socket and a file to a client process through the handler API; the
// client proves each works after the server has exited, and both check
// their descriptor counts.
func TestCompatCrossProcess(t *testing.T) {
	compatCheckLeaks(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "h.sock")
	data := filepath.Join(dir, "data.txt")
	if err := os.WriteFile(data, []byte("seed-compatible"), 0o600); err != nil {
		t.Fatal(err)
	}

	server := compatStart(t, "server", "SOCK="+sock, "FILE="+data)
	ready := strings.Fields(server.line())
	if len(ready) != 3 || ready[0] != "ready" {
		t.Fatalf("server said %q", ready)
	}
	tcpAddr, udpAddr := ready[1], ready[2]

	client := compatStart(t, "client", "SOCK="+sock, "TCP="+tcpAddr)
	// The server exits once it has handed everything over and closed its
	// own copies: what works from now on works in the client.
	server.mustExit()
	if got := client.line(); got != "received tcp,udp,file" {
		t.Fatalf("client: %q", got)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after the server closed its listener: %v", err)
	}

	c, err := net.DialTimeout("tcp", tcpAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(b) != "accepted by the client\n" {
		t.Fatalf("TCP: read %q, %v", b, err)
	}

	uc, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	uc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := uc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := uc.Read(buf)
	uc.Close()
	if err != nil || string(buf[:n]) != "pong: ping" {
		t.Fatalf("UDP: read %q, %v", buf[:n], err)
	}

	if got := client.line(); got != `file "seed-compatible"` {
		t.Errorf("client: %q", got)
	}
	client.mustExit()
}

func compatRoleServer() error {
	base, err := fd.Count()
	if err != nil {
		return err
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	f, err := os.Open(os.Getenv("FILE"))
	if err != nil {
		return err
	}
	gln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: os.Getenv("SOCK"), Net: "unixpacket"})
	if err != nil {
		return err
	}
	var order []string
	delivered := make(chan struct{})
	h := graceful.SequenceHandler(
		graceful.ListenerHandler(tcp, graceful.Meta{Name: "tcp", Values: map[string]string{"addr": tcp.Addr().String()}}),
		graceful.PacketConnHandler(udp, graceful.Meta{Name: "udp"}),
		// As in the original package's example: close the unix listener
		// so that the successor can listen on the same path.
		graceful.CallbackHandler(func() { order = append(order, "close"); gln.Close() }),
		graceful.FileHandler(f, graceful.Meta{Name: "file", Custom: map[string]any{"size": 15}}),
		graceful.CallbackHandler(func() { order = append(order, "delivered"); close(delivered) }),
	)
	compatSay("ready %s %s", tcp.Addr(), udp.LocalAddr())
	if err := graceful.Serve(gln, h); err != nil {
		return fmt.Errorf("Serve: %w", err)
	}
	select {
	case <-delivered:
	default:
		return errors.New("Serve returned before the delivery callback ran")
	}
	if !slices.Equal(order, []string{"close", "delivered"}) {
		return fmt.Errorf("callbacks ran in order %q", order)
	}
	tcp.Close()
	udp.Close()
	f.Close()
	return compatAwaitCount(base)
}

func compatRoleClient() error {
	base, err := fd.Count()
	if err != nil {
		return err
	}
	var (
		names []string
		ln    net.Listener
		pc    net.PacketConn
		file  *os.File
		errs  []error
	)
	err = graceful.Receive(os.Getenv("SOCK"), func(rfd int, meta graceful.Meta) {
		names = append(names, meta.Name)
		var err error
		switch meta.Name {
		case "tcp":
			ln, err = graceful.FdListener(rfd, meta)
			if got, want := meta.Values["addr"], os.Getenv("TCP"); err == nil && got != want {
				err = fmt.Errorf("tcp meta addr %q, want %q", got, want)
			}
		case "udp":
			err = compatCheckWrongKind(rfd, meta)
			if err == nil {
				pc, err = graceful.FdPacketConn(rfd, meta)
			}
		case "file":
			if got, _ := meta.Custom["size"].(int); got != 15 {
				err = fmt.Errorf("file meta custom %v", meta.Custom)
			}
			file = os.NewFile(uintptr(rfd), meta.Name)
		default:
			err = fmt.Errorf("unexpected descriptor %q", meta.Name)
			fd.Close(rfd)
		}
		if err != nil {
			errs = append(errs, err)
		}
	})
	if err != nil {
		return fmt.Errorf("Receive: %w", err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	compatSay("received %s", strings.Join(names, ","))

	c, err := ln.Accept()
	if err != nil {
		return err
	}
	_, err = io.WriteString(c, "accepted by the client\n")
	c.Close()
	if err != nil {
		return err
	}

	pc.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		return err
	}
	if _, err := pc.WriteTo(append([]byte("pong: "), buf[:n]...), from); err != nil {
		return err
	}

	b, err := io.ReadAll(file)
	if err != nil {
		return err
	}
	compatSay("file %q", b)
	ln.Close()
	pc.Close()
	file.Close()
	return compatAwaitCount(base)
}

// compatCheckWrongKind checks that FdListener refuses a duplicate of rfd,
// a UDP socket, and closes it.
func compatCheckWrongKind(rfd int, meta graceful.Meta) error {
	before, err := fd.Count()
	if err != nil {
		return err
	}
	d, err := fd.DupFD(rfd)
	if err != nil {
		return err
	}
	if ln, err := graceful.FdListener(d, meta); !errors.Is(err, graceful.ErrFdKind) {
		if ln != nil {
			ln.Close()
		}
		return fmt.Errorf("FdListener on a UDP socket: %v, want ErrFdKind", err)
	}
	return compatAwaitCount(before)
}

// compatServe serves h on a fresh socket path in this process until the
// test ends, and returns the path and the server.
func compatServe(t testing.TB, h graceful.Handler, logger *slog.Logger) (string, *graceful.Server) {
	t.Helper()
	sock := compatSockPath(t)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	s := &graceful.Server{Handler: h, Logger: logger}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return sock, s
}

// compatLog is a slog.Handler that hands the messages of its records to a
// channel, for tests that wait for the server to report something.
type compatLog struct{ msgs chan string }

func newCompatLog() (*slog.Logger, chan string) {
	ch := make(chan string, 64)
	return slog.New(compatLog{ch}), ch
}

func (l compatLog) Enabled(context.Context, slog.Level) bool { return true }
func (l compatLog) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			msg += ": " + a.Value.String()
		}
		return true
	})
	select {
	case l.msgs <- msg:
	default:
	}
	return nil
}
func (l compatLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l compatLog) WithGroup(string) slog.Handler      { return l }

// awaitLog waits for a log message starting with prefix.
func awaitLog(t testing.TB, msgs chan string, prefix string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case m := <-msgs:
			if strings.HasPrefix(m, prefix) {
				return m
			}
		case <-timeout:
			t.Fatalf("no log message %q in 30s", prefix)
		}
	}
}

// TestCompatHandlerError: a handler that fails sends no descriptor; the
// client process gets ErrHandlerFailed and no descriptor, the delivery
// callbacks do not run, and neither process leaks.
func TestCompatHandlerError(t *testing.T) {
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	closedLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedLn.Close()

	for _, tt := range []struct {
		name    string
		h       graceful.Handler
		message string
	}{
		{
			name: "errorf",
			h: graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
				w.Errorf("no descriptors today: %w", os.ErrPermission)
			}),
			message: "no descriptors today: permission denied",
		},
		{
			name:    "closed listener",
			h:       graceful.ListenerHandler(closedLn, graceful.Meta{Name: "gone"}),
			message: `add "gone"`,
		},
		{
			name:    "bad fd",
			h:       graceful.FdHandler(-1, graceful.Meta{Name: "bad"}),
			message: "bad file descriptor",
		},
		{
			name:    "duplicate name",
			h:       graceful.SequenceHandler(graceful.FileHandler(f, graceful.Meta{Name: "x"}), graceful.FileHandler(f, graceful.Meta{Name: "x"})),
			message: "duplicate item name",
		},
		{
			name:    "panic",
			h:       graceful.HandlerFunc(func(net.Conn, graceful.ResponseWriter) { panic("handler bug") }),
			message: "handler panicked: handler bug",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			compatCheckLeaks(t)
			called := make(chan struct{}, 1)
			h := graceful.SequenceHandler(
				graceful.FileHandler(f, graceful.Meta{Name: "first"}),
				tt.h,
				graceful.CallbackHandler(func() { called <- struct{}{} }),
			)
			logger, msgs := newCompatLog()
			sock, _ := compatServe(t, h, logger)
			client := compatStart(t, "client-expect-err", "SOCK="+sock, "WANT="+tt.message)
			client.mustExit()
			awaitLog(t, msgs, "graceful: handler failed")
			select {
			case <-called:
				t.Error("the delivery callback ran for a failed batch")
			default:
			}
		})
	}
}

func compatRoleClientExpectErr() error {
	base, err := fd.Count()
	if err != nil {
		return err
	}
	calls := 0
	err = graceful.Receive(os.Getenv("SOCK"), func(rfd int, _ graceful.Meta) {
		calls++
		fd.Close(rfd)
	})
	if !errors.Is(err, graceful.ErrHandlerFailed) || !strings.Contains(err.Error(), os.Getenv("WANT")) {
		return fmt.Errorf("Receive: %v; want ErrHandlerFailed with %q", err, os.Getenv("WANT"))
	}
	if calls != 0 {
		return fmt.Errorf("%d callbacks for a failed batch", calls)
	}
	return compatAwaitCount(base)
}

// TestCompatClientHangup: a client process that goes away before the
// batch is delivered (before reading anything, or after reading part of
// it without acknowledging) leaves the server process as it was: no leak,
// no delivery callback, and the next client is served.
func TestCompatClientHangup(t *testing.T) {
	for _, role := range []string{"hangup", "hangup-after-read"} {
		t.Run(role, func(t *testing.T) {
			compatCheckLeaks(t)
			tcp, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer tcp.Close()
			release := make(chan struct{})
			gate := graceful.HandlerFunc(func(net.Conn, graceful.ResponseWriter) { <-release })
			if role == "hangup-after-read" {
				close(release)
			}
			var called sync.Mutex
			calls := 0
			h := graceful.SequenceHandler(
				graceful.ListenerHandler(tcp, graceful.Meta{Name: "tcp"}),
				gate,
				graceful.CallbackHandler(func() { called.Lock(); calls++; called.Unlock() }),
			)
			logger, msgs := newCompatLog()
			sock, _ := compatServe(t, h, logger)

			child := compatStart(t, role, "SOCK="+sock)
			child.mustExit()
			if role == "hangup" {
				close(release)
			}
			awaitLog(t, msgs, "graceful: send descriptors")
			called.Lock()
			if calls != 0 {
				t.Errorf("delivery callback ran %d times for an undelivered batch", calls)
			}
			called.Unlock()

			// The next client is served.
			var names []string
			err = graceful.Receive(sock, func(rfd int, m graceful.Meta) {
				names = append(names, m.Name)
				fd.Close(rfd)
			})
			if err != nil || !slices.Equal(names, []string{"tcp"}) {
				t.Fatalf("Receive after the hangup: %v, %q", err, names)
			}
			called.Lock()
			if calls != 1 {
				t.Errorf("delivery callback ran %d times, want 1", calls)
			}
			called.Unlock()
		})
	}
}

func compatRoleHangup() error {
	c, err := net.Dial("unixpacket", os.Getenv("SOCK"))
	if err != nil {
		return err
	}
	return c.Close()
}

// compatRoleHangupAfterRead reads the first message of the batch, with
// whatever descriptors it carries, and goes without acknowledging.
func compatRoleHangupAfterRead() error {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: os.Getenv("SOCK"), Net: "unixpacket"})
	if err != nil {
		return err
	}
	buf, oob := make([]byte, 1<<16), make([]byte, 1<<12)
	if _, _, _, _, err := c.ReadMsgUnix(buf, oob); err != nil {
		return err
	}
	return c.Close()
}

// TestCompatCallbackPanic: a Receive callback that panics keeps what it
// was handed; Receive closes the rest.
func TestCompatCallbackPanic(t *testing.T) {
	compatCheckLeaks(t)
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var hs []graceful.Handler
	for i := range 5 {
		hs = append(hs, graceful.FileHandler(f, graceful.Meta{Name: fmt.Sprint("f", i)}))
	}
	sock, _ := compatServe(t, graceful.SequenceHandler(hs...), nil)

	before := compatCount(t)
	var handed []int
	func() {
		defer func() {
			if r := recover(); r != "callback bug" {
				t.Errorf("recovered %v", r)
			}
		}()
		graceful.Receive(sock, func(rfd int, m graceful.Meta) {
			handed = append(handed, rfd)
			if m.Name == "f1" {
				panic("callback bug")
			}
		})
		t.Error("Receive returned")
	}()
	if len(handed) != 2 {
		t.Fatalf("%d descriptors handed over, want 2", len(handed))
	}
	// The two handed over are the callback's; nothing else is left.
	if err := compatAwaitCount(before + 2); err != nil {
		t.Error(err)
	}
	for _, h := range handed {
		fd.Close(h)
	}
}

// TestCompatFdKinds: FdListener, FdConn and FdPacketConn take ownership of
// their descriptor, convert the right kinds and refuse (closing the
// descriptor) the wrong ones.
func TestCompatFdKinds(t *testing.T) {
	compatCheckLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	to := map[string]func(int, graceful.Meta) (io.Closer, error){
		"listener": func(f int, m graceful.Meta) (io.Closer, error) { return graceful.FdListener(f, m) },
		"conn":     func(f int, m graceful.Meta) (io.Closer, error) { return graceful.FdConn(f, m) },
		"packet":   func(f int, m graceful.Meta) (io.Closer, error) { return graceful.FdPacketConn(f, m) },
	}
	from := map[string]any{"listener": ln, "conn": conn, "packet": pc}
	for fromName, v := range from {
		for toName, conv := range to {
			t.Run(fromName+"-to-"+toName, func(t *testing.T) {
				before := compatCount(t)
				d, err := fd.Dup(v)
				if err != nil {
					t.Fatal(err)
				}
				c, err := conv(d, graceful.Meta{Name: fromName})
				if fromName == toName {
					if err != nil {
						t.Fatal(err)
					}
					c.Close()
				} else if !errors.Is(err, graceful.ErrFdKind) {
					if c != nil {
						c.Close()
					}
					t.Fatalf("%v, want ErrFdKind", err)
				}
				if err := compatAwaitCount(before); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

// TestCompatStreamAndMeta: a server on a SOCK_STREAM unix listener is
// served the same way, and Meta arrives whole.
func TestCompatStreamAndMeta(t *testing.T) {
	compatCheckLeaks(t)
	sock := compatSockPath(t)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := graceful.Meta{
		Name:   "binary",
		Values: map[string]string{"b": "2", "a": "1"},
		Custom: map[string]any{"n": 42, "s": "str", "f": 1.5},
	}
	done := make(chan error, 1)
	go func() { done <- graceful.Serve(ln, graceful.FdHandler(int(f.Fd()), want)) }()
	var got []graceful.Meta
	err = graceful.Receive(sock, func(rfd int, m graceful.Meta) {
		got = append(got, m)
		same, err := fd.Same(rfd, int(f.Fd()))
		if err != nil || !same {
			t.Errorf("received descriptor is not the file sent: %v", err)
		}
		fd.Close(rfd)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(want) {
		t.Errorf("Meta: got %+v, want %+v", got, want)
	}
	ln.Close()
	if err := <-done; err != nil {
		t.Errorf("Serve after its listener was closed: %v", err)
	}
}

// TestCompatServerLifecycle: ListenAndServe replaces a stale socket file,
// refuses a live one, and Shutdown stops it; Serve returns nil.
func TestCompatServerLifecycle(t *testing.T) {
	compatCheckLeaks(t)
	sock := compatSockPath(t)
	// A stale socket file: its listener is gone, the file stays.
	stale, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()

	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := &graceful.Server{Handler: graceful.FileHandler(f, graceful.Meta{Name: "f"})}
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe(sock) }()

	// Once a client is served, the server is listening.
	var c graceful.Client
	c.Timeout = 30 * time.Second
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.Receive(sock, func(rfd int, _ graceful.Meta) { fd.Close(rfd) })
		if err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("ListenAndServe: %v", err)
		default:
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		// Nothing tells when ListenAndServe is listening: poll.
		time.Sleep(5 * time.Millisecond)
	}

	// A live socket is never stolen.
	if err := graceful.ListenAndServe(sock, graceful.FileHandler(f, graceful.Meta{})); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second ListenAndServe on a live socket: %v, want EADDRINUSE", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("ListenAndServe after Shutdown: %v", err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Shutdown: %v", err)
	}
	if err := s.Serve(nil); err != nil {
		t.Errorf("Serve after Shutdown: %v", err)
	}
	if err := graceful.ListenAndServe(sock, nil); !errors.Is(err, graceful.ErrNoHandler) {
		t.Errorf("ListenAndServe without a handler: %v", err)
	}
}

// TestCompatReceiveErrors: Receive from nothing, or from a peer that does
// not speak the protocol, fails without leaking.
func TestCompatReceiveErrors(t *testing.T) {
	compatCheckLeaks(t)
	sock := compatSockPath(t)
	if err := graceful.Receive(sock, func(int, graceful.Meta) { t.Error("callback") }); err == nil {
		t.Error("Receive with no server succeeded")
	}

	// A unixmsg peer that sends a batch with a descriptor but without the
	// handler protocol's tag.
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		uc, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		c, err := unixmsg.NewConn(uc, nil)
		if err != nil {
			uc.Close()
			return
		}
		defer c.Close()
		var b unixmsg.Batch
		defer b.Close()
		if b.Add("x", ln, nil, nil) == nil {
			c.Send(&b)
		}
	}()
	err = graceful.Receive(sock, func(int, graceful.Meta) { t.Error("callback") })
	if !errors.Is(err, graceful.ErrHandlerProtocol) {
		t.Errorf("Receive from a foreign peer: %v, want ErrHandlerProtocol", err)
	}
}

// TestCompatSendReceiveMsg: the original package's Send and ReceiveMsg
// work on connections that stay the caller's.
func TestCompatSendReceiveMsg(t *testing.T) {
	compatCheckLeaks(t)
	p, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, pfd := range p {
		f := os.NewFile(uintptr(pfd), "pair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
		defer c.Close()
	}
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for round := range 2 {
		sent := make(chan error, 1)
		go func() { sent <- graceful.Send(conns[0], int(f.Fd()), graceful.Meta{Name: fmt.Sprint("round", round)}) }()
		var names []string
		err := graceful.ReceiveMsg(conns[1], func(rfd int, m graceful.Meta) {
			names = append(names, m.Name)
			if same, err := fd.Same(rfd, int(f.Fd())); err != nil || !same {
				t.Errorf("received descriptor is not the file sent: %v", err)
			}
			fd.Close(rfd)
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
		if want := []string{fmt.Sprint("round", round)}; !slices.Equal(names, want) {
			t.Errorf("round %d: received %q, want %q", round, names, want)
		}
	}
}

// TestCompatServerClose: Close and an expired Shutdown cut off a client
// whose handler is still running; its batch is not delivered, its
// callback does not run, the client gets an error and nothing leaks.
func TestCompatServerClose(t *testing.T) {
	for _, how := range []string{"close", "shutdown"} {
		t.Run(how, func(t *testing.T) {
			compatCheckLeaks(t)
			f, err := os.Open(os.Args[0])
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			entered, release := make(chan struct{}), make(chan struct{})
			called := make(chan struct{}, 1)
			h := graceful.SequenceHandler(
				graceful.FileHandler(f, graceful.Meta{Name: "f"}),
				graceful.HandlerFunc(func(net.Conn, graceful.ResponseWriter) {
					close(entered)
					<-release
				}),
				graceful.CallbackHandler(func() { called <- struct{}{} }),
			)
			sock := compatSockPath(t)
			ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
			if err != nil {
				t.Fatal(err)
			}
			s := &graceful.Server{Handler: h}
			served := make(chan error, 1)
			go func() { served <- s.Serve(ln) }()
			received := make(chan error, 1)
			go func() {
				received <- graceful.Receive(sock, func(rfd int, _ graceful.Meta) {
					t.Error("callback for an undelivered batch")
					fd.Close(rfd)
				})
			}()
			<-entered
			switch how {
			case "close":
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			case "shutdown":
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
					t.Errorf("Shutdown with an ended context: %v", err)
				}
			}
			if err := <-received; err == nil {
				t.Error("Receive from a closed server succeeded")
			}
			close(release)
			if err := <-served; err != nil {
				t.Errorf("Serve: %v", err)
			}
			select {
			case <-called:
				t.Error("delivery callback ran")
			default:
			}
		})
	}
}

// TestCompatCallbacks: delivery callbacks run in order before Receive
// returns, and one that panics does not stop the others.
func TestCompatCallbacks(t *testing.T) {
	compatCheckLeaks(t)
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ran := make(chan string, 4)
	logger, msgs := newCompatLog()
	sock, _ := compatServe(t, graceful.SequenceHandler(
		graceful.CallbackHandler(func() { ran <- "first" }),
		graceful.FileHandler(f, graceful.Meta{Name: "f"}),
		graceful.CallbackHandler(func() { panic("callback bug") }),
		graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
			w.OnDelivered(func() { ran <- "last" })
		}),
	), logger)
	n := 0
	if err := graceful.Receive(sock, func(rfd int, _ graceful.Meta) { n++; fd.Close(rfd) }); err != nil || n != 1 {
		t.Fatalf("Receive: %v, %d descriptors", err, n)
	}
	// Receive returns after the server's callbacks: no waiting here.
	var order []string
	for len(ran) > 0 {
		order = append(order, <-ran)
	}
	if want := []string{"first", "last"}; !slices.Equal(order, want) {
		t.Errorf("callbacks ran: %q, want %q", order, want)
	}
	awaitLog(t, msgs, "graceful: delivery callback panicked")
}
