//go:build linux

package graceful_test

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
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
			// In a process group of its own, so that no signal for this
			// process's group reaches it; and gated, as a stop can end
			// early.
			gate := filepath.Join(t.TempDir(), "gate")
			s := startRestartChild(t, "", "stall", &syscall.SysProcAttr{Setpgid: true}, envPath+"="+path, envStallAt+"="+step, envStallGate+"="+gate)
			s.expect("stopping at=" + step)
			// Wait for the stop itself.
			awaitState(t, s.cmd.Process.Pid, "T")
			start := time.Now()
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
