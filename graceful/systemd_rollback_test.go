//go:build linux

package graceful_test

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/unixmsg"
	"golang.org/x/sys/unix"
)

// mainAfter replays the notifications received so far as systemd reads
// them, from main as the main process, and returns the main process at
// the end. Under NotifyAccess=main (all false) systemd ignores every
// notification but the main process's; under NotifyAccess=all it reads
// them all. MAINPID= changes the main process.
func (np *notifyPeer) mainAfter(main int, all bool) int {
	np.mu.Lock()
	defer np.mu.Unlock()
	for _, m := range np.msgs {
		if !all && m.pid != main {
			continue
		}
		for _, l := range strings.Split(m.text, "\n") {
			if v, ok := strings.CutPrefix(l, "MAINPID="); ok {
				main, _ = strconv.Atoi(v)
			}
		}
	}
	return main
}

// TestSystemdSuccessorFailsAfterMainPID: the predecessor has named the
// successor the main process (MAINPID=) and then fails it before DONE (it
// hangs up, as a predecessor whose DONE cannot be sent does). Under
// NotifyAccess=main only the successor is heard by then: it must name the
// predecessor back, ready, before it gives up, or systemd follows a
// process about to exit while the predecessor serves on. Nor may it say
// STOPPING=1: the service does not stop.
func TestSystemdSuccessorFailsAfterMainPID(t *testing.T) {
	restartCheckLeaks(t)
	dir := t.TempDir()
	notify := filepath.Join(dir, "notify")
	np := newNotifyPeer(t, notify)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	path := filepath.Join(dir, "handoff.sock")
	self := os.Getpid()
	successor := make(chan int, 1)
	// This process plays the predecessor, the main process.
	done := fakePredecessor(t, path, func(c *unixmsg.Conn, l *net.UnixListener) error {
		b := offerBatch(t, l, 2, 1, true, tcp)
		defer b.Close()
		if err := c.Send(b); err != nil {
			return err
		}
		r, err := c.Receive() // READY
		if err != nil {
			return err
		}
		r.Close()
		pid, err := peerPID(c.UnixConn())
		if err != nil {
			return err
		}
		successor <- pid
		m, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: notify, Net: "unixgram"})
		if err != nil {
			return err
		}
		defer m.Close()
		_, err = m.Write([]byte("MAINPID=" + strconv.Itoa(pid)))
		return err // and hang up: no DONE
	})
	s := startRestartChild(t, "", "systemd-generation", nil,
		"SD_HANDOFF="+path, "SD_ADDR=127.0.0.1:0", "NOTIFY_SOCKET="+notify)
	if err := s.wait(); err == nil {
		t.Errorf("the successor ended with status 0; its handoff failed")
	}
	if err := <-done; err != nil {
		t.Fatalf("fake predecessor: %v", err)
	}
	pid := <-successor
	np.await(t, self, "MAINPID="+strconv.Itoa(pid))
	back := np.index(pid, "MAINPID="+strconv.Itoa(self))
	if main := np.mainAfter(self, false); main != self || back < 0 {
		np.mu.Lock()
		t.Errorf("under NotifyAccess=main systemd follows pid %d, want the predecessor %d (the successor %d failed); notifications: %+v", main, self, pid, np.msgs)
		np.mu.Unlock()
	}
	if back >= 0 && np.index(pid, "READY=1") != back {
		t.Errorf("the successor named the predecessor back without READY=1")
	}
	// It was never the service: its exit is not the service stopping,
	// which systemd would hear under NotifyAccess=all.
	if i := np.index(pid, "STOPPING=1"); i >= 0 {
		t.Errorf("the failed successor sent STOPPING=1 (#%d)", i)
	}
}

// TestSystemdPredecessorFailsAfterMainPID: a predecessor that has named
// its successor the main process and then cannot send DONE (the successor
// hangs up instead of acknowledging it) serves on, says so (READY=1) and
// names itself the main process again, which systemd takes under
// NotifyAccess=all. (Under NotifyAccess=main it takes it once the
// successor has named the predecessor back, as
// TestSystemdSuccessorFailsAfterMainPID shows a successor does.)
func TestSystemdPredecessorFailsAfterMainPID(t *testing.T) {
	restartCheckLeaks(t)
	dir := t.TempDir()
	notify := filepath.Join(dir, "notify")
	np := newNotifyPeer(t, notify)
	handoff := filepath.Join(dir, "handoff.sock")
	addr := freeTCPAddr(t)
	pred := startRestartChild(t, "", "systemd-generation", nil,
		"SD_HANDOFF="+handoff, "SD_ADDR="+addr, "NOTIFY_SOCKET="+notify)
	predPID, _ := strconv.Atoi(field(pred.expect("ready"), "pid"))
	np.await(t, predPID, "READY=1")

	// This process plays the successor: it says READY, waits for DONE
	// and hangs up without acknowledging it.
	c, err := unixmsg.Dial("unixpacket", handoff, &unixmsg.Options{NoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	var hello unixmsg.Batch
	hello.SetPayload(mustAppend(t, handoffmsg.Message{Type: handoffmsg.MsgHello, MinVersion: 1, MaxVersion: 1}))
	if err := c.Send(&hello); err != nil {
		t.Fatal(err)
	}
	offer, err := c.Receive()
	if err != nil {
		t.Fatal(err)
	}
	offer.Close()
	var ready unixmsg.Batch
	ready.SetPayload(mustAppend(t, handoffmsg.Message{Type: handoffmsg.MsgReady}))
	if err := c.Send(&ready); err != nil {
		t.Fatal(err)
	}
	var n int
	rc, err := c.UnixConn().SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(s uintptr) {
		for {
			n, err = unix.Poll([]unix.PollFd{{Fd: int32(s), Events: unix.POLLIN}}, 20_000)
			if err != unix.EINTR {
				return
			}
		}
	})
	if err != nil || n == 0 {
		t.Fatalf("no DONE within 20 s: %v", err)
	}
	named := np.await(t, predPID, "MAINPID="+strconv.Itoa(os.Getpid()))
	c.Close()

	back := np.await(t, predPID, "MAINPID="+strconv.Itoa(predPID))
	if back < named || np.index(predPID, "READY=1") > back {
		t.Errorf("MAINPID=<successor> #%d, MAINPID=<predecessor> #%d: want the predecessor named again, with READY=1, after it", named, back)
	}
	if main := np.mainAfter(predPID, true); main != predPID {
		t.Errorf("under NotifyAccess=all systemd follows pid %d, want the predecessor %d", main, predPID)
	}
	// It serves on.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	reply, _ := bufio.NewReader(conn).ReadString('\n')
	if strings.TrimSpace(reply) != "pid="+strconv.Itoa(predPID) {
		t.Errorf("served by %q after the failed handoff, want the predecessor %d", reply, predPID)
	}
}

// peerPID returns the PID of uc's peer (SO_PEERCRED).
func peerPID(uc *net.UnixConn) (int, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(s uintptr) { cred, cerr = unix.GetsockoptUcred(int(s), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return int(cred.Pid), nil
}
