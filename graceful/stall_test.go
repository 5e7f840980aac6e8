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
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/unixmsg"
)

// The stall tests start a successor that speaks the protocol itself and
// stops (SIGSTOP) at one step of the handoff: the predecessor must not
// wait for it longer than its timeouts, must give every connection back
// to its reader, and must serve on; the successor, continued, must not
// take over.
const (
	envStallAt   = "GT_STALL_AT"   // the step
	envStallGate = "GT_STALL_GATE" // a file whose creation lets it carry on
)

// The steps a stalled successor stops at.
var stallSteps = []string{"before-hello", "before-ready", "before-conns", "before-adopted", "before-done", "done-unacknowledged"}

var _ = registerRestartRole("stall", roleStall)

// roleStall plays a successor up to the step envStallAt names, stops
// there, and once continued tries to carry on; it reports what happened.
func roleStall() error {
	at := os.Getenv(envStallAt)
	stop := func(step string) {
		if step != at {
			return
		}
		say("stopping at=%s", step)
		syscall.Kill(os.Getpid(), syscall.SIGSTOP)
		// A stop may end early (a SIGCONT meant for others): carry on
		// only once the test says so.
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if _, err := os.Stat(os.Getenv(envStallGate)); err == nil {
				break
			}
		}
		say("continued at=%s", step)
	}
	c, err := unixmsg.Dial("unixpacket", os.Getenv(envPath), &unixmsg.Options{NoAck: true})
	if err != nil {
		return err
	}
	defer c.Close()
	stop("before-hello")
	if err := handoffmsg.Send(c, handoffmsg.Message{Type: handoffmsg.MsgHello, MinVersion: 1, MaxVersion: 1,
		Features: handoffmsg.FeatureMigrate | handoffmsg.FeatureStreamConns}); err != nil {
		return report(err)
	}
	offer, err := c.Receive()
	if err != nil {
		return report(err)
	}
	offer.Close()
	stop("before-ready")
	if err := handoffmsg.Send(c, handoffmsg.Message{Type: handoffmsg.MsgReady,
		Features: handoffmsg.FeatureMigrate | handoffmsg.FeatureStreamConns}); err != nil {
		return report(err)
	}
	say("sent READY")
	stop("before-conns")
	total := 0
	for {
		b, err := c.Receive()
		if err != nil {
			return report(err)
		}
		m, err := handoffmsg.Parse(b.Payload())
		total += b.Len()
		b.Close()
		if err != nil {
			return report(err)
		}
		if m.Type != handoffmsg.MsgConns {
			return report(fmt.Errorf("%s where CONNS was due", m.Type))
		}
		if m.Total != handoffmsg.ConnsMore {
			break
		}
	}
	stop("before-adopted")
	if err := handoffmsg.Send(c, handoffmsg.Message{Type: handoffmsg.MsgAdopted, Items: uint32(total)}); err != nil {
		return report(err)
	}
	stop("before-done")
	if at == "done-unacknowledged" {
		// Read DONE's frames off the socket without acknowledging them.
		buf := make([]byte, 64<<10)
		if _, err := c.UnixConn().Read(buf); err != nil {
			return report(err)
		}
		if _, err := c.UnixConn().Read(buf); err != nil {
			return report(err)
		}
		stop("done-unacknowledged")
		// Now acknowledge, as a successor that woke up would. The
		// predecessor has given up: it hung up, or (if it gave up before
		// DONE) it answers with ERROR; either way the acknowledgement is
		// too late, which the test checks on the predecessor's side.
		ack := []byte("FDPS\x01\x03\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00")
		if _, err := c.UnixConn().Write(ack); err != nil {
			return report(err)
		}
		n, err := c.UnixConn().Read(buf)
		if err != nil {
			return report(err)
		}
		if strings.Contains(string(buf[:n]), "FDHO\x01\x05") {
			return report(errors.New("ERROR from the predecessor"))
		}
		say("result unknown: %q", buf[:n])
		return nil
	}
	m, err := handoffmsg.Receive(c)
	if err == nil {
		err = m.Expect(handoffmsg.MsgDone)
	}
	if err != nil {
		return report(err)
	}
	say("result took-over")
	return nil
}

// report says how the stalled successor's handoff ended.
func report(err error) error {
	say("result failed: %s", strings.ReplaceAll(err.Error(), "\n", " "))
	return nil
}

func TestStalledSuccessor(t *testing.T) {
	const timeout = 2 * time.Second
	for _, step := range stallSteps {
		t.Run(step, func(t *testing.T) {
			restartCheckLeaks(t)
			path := filepath.Join(t.TempDir(), "h.sock")
			logs := make(chan string, 1000)
			p, _ := readyGeneration(t, graceful.Options{Path: path, Timeout: timeout, QuiesceTimeout: time.Second, Migrate: true,
				Logger: slog.New(chanHandler(logs))})
			clients := make([]net.Conn, 4)
			for i := range clients {
				clients[i] = trackedEcho(t, p)
			}
			// Two HTTP requests in hand: one ends once the successor has
			// said READY (the predecessor quiescing, or about to), the
			// other once the successor has stopped.
			busy := startBusyHTTP(t, p, 2)
			quiesced := step != "before-hello" && step != "before-ready"
			// In a process group of its own, so that no signal for this
			// process's group reaches it; and gated, as a stop can end
			// early.
			gate := filepath.Join(t.TempDir(), "gate")
			s := startRestartChild(t, "", "stall", &syscall.SysProcAttr{Setpgid: true}, envPath+"="+path, envStallAt+"="+step, envStallGate+"="+gate)
			if quiesced {
				// The predecessor quiesces for the successor that then
				// stops: the client's next request, sent at once, finds
				// net/http watching.
				s.expect("sent READY")
			}
			next := []chan error{busy[0].finish()}
			s.expect("stopping at=" + step)
			// Wait for the stop itself.
			awaitState(t, s.cmd.Process.Pid, "T")
			start := time.Now()
			next = append(next, busy[1].finish())
			// Every connection answers again within the timeouts: the
			// quiesce (1 s), the whole migration (2 s) from READY, a
			// successor's turn (2 s), a first message (2 s).
			for i, c := range clients {
				c.SetDeadline(start.Add(timeout + 2*time.Second))
				if _, err := fmt.Fprintf(c, "ping %d\n", i); err != nil {
					t.Fatalf("client %d: %v", i, err)
				}
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil || line != fmt.Sprintf("ping %d\n", i) {
					t.Fatalf("client %d after %v: %q, %v", i, time.Since(start), line, err)
				}
			}
			for i, n := range next {
				if err := <-n; err != nil {
					t.Fatalf("HTTP client %d after %v: %v", i, time.Since(start), err)
				}
			}
			frozen := time.Since(start)
			t.Logf("connections answered %v after the successor stopped", frozen.Round(time.Millisecond))
			// Once the predecessor has given up on it, let the stalled
			// successor carry on: it must not take over.
			if step == "before-hello" {
				awaitLine(t, logs, "dropped a peer that said nothing")
			} else {
				awaitLine(t, logs, "rolled back")
			}
			if err := os.WriteFile(gate, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			s.cmd.Process.Signal(syscall.SIGCONT)
			// What it learns first may be an ERROR meant for its
			// earlier step; what matters is the predecessor's side,
			// checked below.
			if l := s.expect("result"); strings.HasPrefix(l, "result took-over") {
				t.Errorf("the stalled successor, continued: %s", l)
			}
			s.mustExit()
			if p.HandedOff() {
				t.Fatal("handed off to a successor that stalled")
			}
			for i, c := range clients {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintf(c, "again %d\n", i)
				if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != fmt.Sprintf("again %d\n", i) {
					t.Errorf("client %d after the stall: %q, %v", i, line, err)
				}
			}
			for i, b := range busy {
				if err := b.get("/again", time.Now().Add(5*time.Second)); err != nil {
					t.Errorf("HTTP client %d after the stall: %v", i, err)
				}
			}
			// A healthy successor takes over after it.
			p2, err := graceful.New(graceful.Options{Path: path, Migrate: true})
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
				t.Fatalf("the next successor: %v", err)
			}
		})
	}
}

// busyHTTP is a keep-alive HTTP connection to a Process, whose request is
// in its handler until finish.
type busyHTTP struct {
	c       net.Conn
	r       *bufio.Reader
	release chan struct{}
}

// startBusyHTTP serves HTTP for p on a listener of its own with
// HTTPServer, and returns n connections, each with its request /block in
// its handler.
func startBusyHTTP(t *testing.T, p *graceful.Process, n int) []*busyHTTP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	busy := make([]*busyHTTP, n)
	blocked := make(chan struct{}, n)
	hs := p.HTTP(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			i, _ := strconv.Atoi(r.URL.Query().Get("c"))
			blocked <- struct{}{}
			<-busy[i].release
		}
		io.WriteString(w, r.URL.Path)
	})})
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	t.Cleanup(func() {
		for _, b := range busy {
			if b != nil {
				b.c.Close()
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := hs.Drain(ctx); err != nil {
			t.Errorf("Drain: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	for i := range busy {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		busy[i] = &busyHTTP{c: c, r: bufio.NewReader(c), release: make(chan struct{})}
		fmt.Fprintf(c, "GET /block?c=%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
		select {
		case <-blocked:
		case <-time.After(10 * time.Second):
			t.Fatal("the request did not reach its handler")
		}
	}
	return busy
}

// finish lets the request in hand end; its client reads the answer and
// sends the next request at once, as keep-alive clients do. The channel
// gives the outcome: nil once the next request was answered on the same
// connection, which stays open.
func (b *busyHTTP) finish() chan error {
	done := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(20 * time.Second)
		if err := b.read("/block", deadline); err != nil {
			done <- fmt.Errorf("the request in hand: %w", err)
			return
		}
		done <- b.get("/next", deadline)
	}()
	close(b.release)
	return done
}

// get sends a request for path and reads its answer.
func (b *busyHTTP) get(path string, deadline time.Time) error {
	b.c.SetDeadline(deadline)
	if _, err := io.WriteString(b.c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return err
	}
	return b.read(path, deadline)
}

// read reads the answer to a request for path.
func (b *busyHTTP) read(path string, deadline time.Time) error {
	b.c.SetDeadline(deadline)
	resp, err := http.ReadResponse(b.r, nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return err
	case resp.StatusCode != http.StatusOK || string(body) != path:
		return fmt.Errorf("%s answered %s %q", path, resp.Status, body)
	case resp.Close:
		return fmt.Errorf("%s answered with Connection: close", path)
	}
	return nil
}

// awaitState waits until process pid is in state (as /proc/pid/stat says:
// "T" stopped, or "t" stopped by a tracer).
func awaitState(t *testing.T, pid int, state string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		// The state follows the command name in parentheses.
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && strings.HasPrefix(strings.ToUpper(string(b[i+2:])), state) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d not in state %s: %s", pid, state, b)
		}
		time.Sleep(time.Millisecond)
	}
}
