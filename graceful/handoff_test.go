//go:build linux

package graceful_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
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

var _ = registerRestartRole("otheruid", roleOtherUID)
