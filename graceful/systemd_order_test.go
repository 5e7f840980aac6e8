//go:build linux

package graceful_test

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/unixmsg"
	"golang.org/x/sys/unix"
)

// TestSystemdMainPIDBeforeDone: the predecessor names its successor
// (MAINPID=) before it tells the successor to go ahead (DONE). This process
// plays the successor, speaking the handoff protocol itself: once DONE is
// there to read, and before it acknowledges DONE (the predecessor does
// nothing more until then), it sends a notification of its own. The
// notification socket queues datagrams in the order they were sent, so
// MAINPID=<this process> must be queued before it.
func TestSystemdMainPIDBeforeDone(t *testing.T) {
	restartCheckLeaks(t)
	dir := t.TempDir()
	notify := filepath.Join(dir, "notify")
	np := newNotifyPeer(t, notify)
	handoff := filepath.Join(dir, "handoff.sock")
	pred := startRestartChild(t, "", "systemd-generation", nil,
		"SD_HANDOFF="+handoff, "SD_ADDR=127.0.0.1:0", "NOTIFY_SOCKET="+notify)
	predPID, _ := strconv.Atoi(field(pred.expect("ready"), "pid"))
	np.await(t, predPID, "READY=1")

	c, err := unixmsg.Dial("unixpacket", handoff, &unixmsg.Options{NoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	send := func(m handoffmsg.Message) {
		t.Helper()
		var b unixmsg.Batch
		b.SetPayload(mustAppend(t, m))
		if err := c.Send(&b); err != nil {
			t.Fatalf("sending %s: %v", m.Type, err)
		}
	}
	receive := func(want handoffmsg.MessageType) {
		t.Helper()
		b, err := c.Receive()
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		m, err := handoffmsg.Parse(b.Payload())
		b.Close()
		if err != nil || m.Type != want {
			t.Fatalf("got %+v, %v; want %s", m, err, want)
		}
	}
	send(handoffmsg.Message{Type: handoffmsg.MsgHello, MinVersion: 1, MaxVersion: 1})
	receive(handoffmsg.MsgOffer)
	send(handoffmsg.Message{Type: handoffmsg.MsgReady})

	// DONE has been sent once there is something to read; the
	// predecessor waits for its acknowledgement, which Receive sends.
	rc, err := c.UnixConn().SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	rc.Control(func(s uintptr) {
		for {
			n, err = unix.Poll([]unix.PollFd{{Fd: int32(s), Events: unix.POLLIN}}, 20_000)
			if err != unix.EINTR {
				return
			}
		}
	})
	if err != nil || n == 0 {
		t.Fatalf("nothing to read after READY within 20 s: %v", err)
	}
	mark, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = mark.Write([]byte("X_FDPASS_TEST=DONE-unacknowledged"))
	mark.Close()
	if err != nil {
		t.Fatal(err)
	}
	marked := np.await(t, os.Getpid(), "X_FDPASS_TEST=DONE-unacknowledged")
	reloading := np.index(predPID, "RELOADING=1")
	mainpid := np.index(predPID, "MAINPID="+strconv.Itoa(os.Getpid()))
	if reloading < 0 || mainpid < 0 || !(reloading < mainpid && mainpid < marked) {
		np.mu.Lock()
		t.Errorf("by the time DONE arrived: RELOADING=1 #%d, MAINPID=%d #%d, want both before #%d (-1: not sent); notifications: %+v",
			reloading, os.Getpid(), mainpid, marked, np.msgs)
		np.mu.Unlock()
	}
	receive(handoffmsg.MsgDone)
	pred.mustExit()
}
