//go:build linux

package graceful_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/unixmsg"
	"golang.org/x/sys/unix"
)

var (
	_ = registerRestartRole("systemd-generation", systemdGeneration)
	_ = registerRestartRole("systemd-store", systemdStore)
)

// systemdStore plays a service across a stop and start: without
// LISTEN_FDS it listens (TCP and UDP), parks both in the descriptor store
// and exits; with them it adopts both and answers one datagram and the
// connections queued while no process ran.
func systemdStore() error {
	// Read before New: adopting systemd's descriptors unsets LISTEN_FDS.
	restarted := os.Getenv("LISTEN_FDS") != ""
	p, err := graceful.New(graceful.Options{Path: os.Getenv("SD_HANDOFF")})
	if err != nil {
		return err
	}
	defer p.Close()
	ln, err := p.Listen("tcp", os.Getenv("SD_ADDR"))
	if err != nil {
		return err
	}
	defer ln.Close()
	pc, err := p.ListenPacket("udp", os.Getenv("SD_UDP"))
	if err != nil {
		return err
	}
	defer pc.Close()
	if err := p.Ready(); err != nil {
		return err
	}
	if !restarted {
		if err := p.Store("fdpass"); err != nil {
			return err
		}
		say("stored pid=%d", os.Getpid())
		return nil
	}
	n, _ := strconv.Atoi(os.Getenv("SD_CONNS"))
	say("serving pid=%d", os.Getpid())
	buf := make([]byte, 64)
	m, from, err := pc.ReadFrom(buf)
	if err != nil {
		return err
	}
	pc.WriteTo(append([]byte("udp "), buf[:m]...), from)
	for range n {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		fmt.Fprintf(c, "pid=%d\n", os.Getpid())
		c.Close()
	}
	return nil
}

// systemdGeneration is one generation of a service run by (a stand-in
// for) systemd: it may get its listener as LISTEN_FDS, and reports what it
// adopted on standard output.
func systemdGeneration() error {
	var passed fd.ID
	fromSystemd := os.Getenv("LISTEN_FDS") != ""
	if fromSystemd {
		var err error
		if passed, err = fd.Identify(3); err != nil {
			return err
		}
	}
	p, err := graceful.New(graceful.Options{Path: os.Getenv("SD_HANDOFF")})
	if err != nil {
		return err
	}
	defer p.Close()
	ln, err := p.Listen("tcp", os.Getenv("SD_ADDR"))
	if err != nil {
		return err
	}
	adopted := false
	if fromSystemd {
		got, err := fd.IdentifyConn(ln)
		if err != nil {
			return err
		}
		adopted = got == passed
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("pid=" + strconv.Itoa(os.Getpid()) + "\n"))
			c.Close()
		}
	}()
	if err := p.Ready(); err != nil {
		return err
	}
	say("ready pid=%d adopted=%t spare-open=%t", os.Getpid(), adopted, holds(os.Getenv("SD_SPARE")))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	select {
	case <-p.Exit():
	case <-sig:
	}
	ln.Close()
	return nil
}

// holds reports whether the process has a descriptor open on the file
// whose identity is id.
func holds(id string) bool {
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if got, err := fd.Identify(n); err == nil && got.String() == id {
			return true
		}
	}
	return false
}

// notifyPeer is a stand-in for systemd's notification socket: it records
// each datagram's text and sender PID.
type notifyPeer struct {
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []notifyMsg
	seen chan struct{}
}

type notifyMsg struct {
	pid  int
	text string
	fds  []int // descriptors sent along (FDSTORE=1), kept open
}

func newNotifyPeer(t *testing.T, path string) *notifyPeer {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := c.SyscallConn()
	rc.Control(func(s uintptr) { unix.SetsockoptInt(int(s), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	np := &notifyPeer{conn: c, seen: make(chan struct{}, 1)}
	go func() {
		buf := make([]byte, 4096)
		oob := make([]byte, 1024)
		for {
			n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			pid := 0
			var fds []int
			if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, cm := range cms {
					if cred, err := unix.ParseUnixCredentials(&cm); err == nil {
						pid = int(cred.Pid)
					} else if rights, err := unix.ParseUnixRights(&cm); err == nil {
						fds = append(fds, rights...)
					}
				}
			}
			np.mu.Lock()
			np.msgs = append(np.msgs, notifyMsg{pid, string(buf[:n]), fds})
			np.mu.Unlock()
			select {
			case np.seen <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		c.Close()
		np.mu.Lock()
		defer np.mu.Unlock()
		for _, m := range np.msgs {
			fd.CloseAll(m.fds)
		}
	})
	return np
}

// stored returns the descriptors of the first message from pid that
// contains text.
func (np *notifyPeer) stored(t *testing.T, pid int, text string) []int {
	t.Helper()
	i := np.await(t, pid, text)
	np.mu.Lock()
	defer np.mu.Unlock()
	return np.msgs[i].fds
}

// index returns the index in arrival order of the first message so far
// from pid that contains text, or -1.
func (np *notifyPeer) index(pid int, text string) int {
	np.mu.Lock()
	defer np.mu.Unlock()
	for i, m := range np.msgs {
		if m.pid == pid && strings.Contains(m.text, text) {
			return i
		}
	}
	return -1
}

// await polls until a message from pid contains text, and returns its
// index in arrival order.
func (np *notifyPeer) await(t *testing.T, pid int, text string) int {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		if i := np.index(pid, text); i >= 0 {
			return i
		}
		select {
		case <-np.seen:
		case <-deadline:
			np.mu.Lock()
			defer np.mu.Unlock()
			t.Fatalf("no %q from pid %d; got %+v", text, pid, np.msgs)
		}
	}
}

// TestSystemdActivationAndNotify: a first generation adopts the listener
// systemd passed and closes the one it did not use; systemd hears READY=1
// from it, RELOADING=1 and MAINPID=<successor> from it at the handoff
// (before the successor's own READY=1; TestSystemdMainPIDBeforeDone shows
// that MAINPID= comes before DONE), and STOPPING=1 at the end.
func TestSystemdActivationAndNotify(t *testing.T) {
	restartCheckLeaks(t)
	dir := t.TempDir()
	np := newNotifyPeer(t, filepath.Join(dir, "notify"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	spare, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer spare.Close()
	spareID, err := fd.IdentifyConn(spare)
	if err != nil {
		t.Fatal(err)
	}
	lf, err := fd.DupFile(ln, "web")
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	sf, err := fd.DupFile(spare, "spare")
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	env := []string{
		"SD_HANDOFF=" + filepath.Join(dir, "handoff.sock"),
		"SD_ADDR=" + ln.Addr().String(),
		"SD_SPARE=" + spareID.String(),
		"NOTIFY_SOCKET=" + filepath.Join(dir, "notify"),
	}

	// systemd sets LISTEN_PID to the service's own PID: a shell that
	// execs the test binary knows it.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -test.run='^$'`, os.Args[0])
	cmd.Env = append(append(os.Environ(), env...), restartChildEnv+"=systemd-generation", "LISTEN_FDS=2", "LISTEN_FDNAMES=web:spare")
	cmd.ExtraFiles = []*os.File{lf, sf}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	sf.Close()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	first := bufio.NewScanner(out)
	if !first.Scan() {
		t.Fatalf("first generation said nothing: %v", cmd.Wait())
	}
	line := first.Text()
	if field(line, "adopted") != "true" || field(line, "spare-open") != "false" {
		t.Fatalf("first generation: %q, want the passed listener adopted and the spare closed", line)
	}
	pid1 := cmd.Process.Pid
	np.await(t, pid1, "READY=1")
	// Only the child holds the listener from here on.
	ln.Close()
	spare.Close()

	second := startRestartChild(t, "", "systemd-generation", nil, env...)
	line = second.expect("ready")
	pid2, _ := strconv.Atoi(field(line, "pid"))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("first generation: %v", err)
	}
	reloading := np.await(t, pid1, "RELOADING=1")
	mainpid := np.await(t, pid1, "MAINPID="+strconv.Itoa(pid2))
	ready2 := np.await(t, pid2, "READY=1")
	if !(reloading < mainpid && mainpid < ready2) {
		t.Errorf("order: RELOADING=1 #%d, MAINPID #%d, successor's READY=1 #%d", reloading, mainpid, ready2)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	reply, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if strings.TrimSpace(reply) != "pid="+strconv.Itoa(pid2) {
		t.Errorf("served by %q, want the second generation %d", reply, pid2)
	}
	second.cmd.Process.Signal(syscall.SIGTERM)
	second.mustExit()
	np.await(t, pid2, "STOPPING=1")
}

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

// TestSystemdStoreStopStart: process A parks its TCP listener and UDP
// socket in (a stand-in for) systemd's descriptor store and exits; with no
// process running, clients connect and a datagram is sent; process B,
// started with what the store holds as LISTEN_FDS, adopts both and serves
// every one of them: no connection refused, no datagram lost.
func TestSystemdStoreStopStart(t *testing.T) {
	restartCheckLeaks(t)
	dir := t.TempDir()
	np := newNotifyPeer(t, filepath.Join(dir, "notify"))
	tcpAddr, udpAddr := freeTCPAddr(t), freeUDPAddr(t)
	env := []string{
		"SD_HANDOFF=" + filepath.Join(dir, "handoff.sock"),
		"SD_ADDR=" + tcpAddr,
		"SD_UDP=" + udpAddr,
		"NOTIFY_SOCKET=" + filepath.Join(dir, "notify"),
		"SD_CONNS=8",
	}
	a := startRestartChild(t, "", "systemd-store", nil, env...)
	line := a.expect("stored")
	a.mustExit()
	pidA, _ := strconv.Atoi(field(line, "pid"))
	fds := np.stored(t, pidA, "FDSTORE=1")
	if len(fds) != 2 {
		t.Fatalf("stored %d descriptors, want 2", len(fds))
	}
	np.await(t, pidA, "STOPPING=1")

	// No process runs: the kernel queues these on the stored sockets.
	var conns []net.Conn
	for range 8 {
		c, err := net.Dial("tcp", tcpAddr)
		if err != nil {
			t.Fatalf("connection refused while stopped: %v", err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	u, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Write([]byte("while-stopped")); err != nil {
		t.Fatal(err)
	}

	files := make([]*os.File, len(fds))
	for i, f := range fds {
		d, err := fd.DupFD(f)
		if err != nil {
			t.Fatal(err)
		}
		files[i] = os.NewFile(uintptr(d), "stored")
		defer files[i].Close()
	}
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -test.run='^$'`, os.Args[0])
	cmd.Env = append(append(os.Environ(), env...), restartChildEnv+"=systemd-store",
		"LISTEN_FDS=2", "LISTEN_FDNAMES=fdpass:fdpass")
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	for i, c := range conns {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		reply, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(reply, "pid=") {
			t.Errorf("connection %d made while stopped: %q, %v", i, reply, err)
		}
	}
	u.SetDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 64)
	n, err := u.Read(buf)
	if err != nil || string(buf[:n]) != "udp while-stopped" {
		t.Errorf("datagram sent while stopped: %q, %v", buf[:n], err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("process B: %v", err)
	}
}

func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func freeUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}
