//go:build linux

package graceful_test

import (
	"bufio"
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
	"github.com/fdpass/fdpass/internal/childtest"
	"golang.org/x/sys/unix"
)

var (
	_ = registerRestartRole("systemd-generation", systemdGeneration)
	_ = registerRestartRole("systemd-store", systemdStore)
)

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
	cmd.Env = append(append(os.Environ(), env...), childtest.Env+"=systemd-generation", "LISTEN_FDS=2", "LISTEN_FDNAMES=web:spare")
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
