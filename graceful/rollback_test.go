//go:build linux

package graceful_test

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/unixmsg"
	"golang.org/x/sys/unix"
)

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
			// In a process group of its own, so that no signal for this
			// process's group reaches it.
			s := startRestartChild(t, "", "gen", &syscall.SysProcAttr{Setpgid: true}, genEnv(dir, 10*time.Second, envMode+"=hold")...)
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

// TestRestartSlowSuccessor: a successor that says READY after the
// predecessor's timeout learns why it failed; the predecessor keeps
// serving and hands over to the next one.
func TestRestartSlowSuccessor(t *testing.T) {
	restartCheckLeaks(t)
	path := filepath.Join(t.TempDir(), "h.sock")
	logs := make(chan string, 100)
	p1, ln1 := readyGeneration(t, graceful.Options{Path: path, Timeout: 200 * time.Millisecond, Logger: slog.New(chanHandler(logs))})
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
	_, ln3 := readyGeneration(t, graceful.Options{Path: path})
	<-p1.Exit()
	if socketID(ln3) != socketID(ln1) {
		t.Error("listener not inherited")
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
