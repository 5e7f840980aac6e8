//go:build linux

package graceful_test

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/internal/childtest"
	"golang.org/x/sys/unix"
)

var _ = registerRestartRole("systemd-autostore", systemdAutoStore)

// systemdAutoStore is one generation of a service under (a stand-in for)
// systemd that stores nothing itself: it listens on SD_TCP and SD_UDP
// (each if set) before Ready, on SD_LATE after it, answers connections
// with its pid, and runs until SIGTERM or a successor takes over.
func systemdAutoStore() error {
	p, err := graceful.New(graceful.Options{Path: os.Getenv("SD_HANDOFF")})
	if err != nil {
		return err
	}
	defer p.Close()
	serve := func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("pid=" + strconv.Itoa(os.Getpid()) + "\n"))
			c.Close()
		}
	}
	if a := os.Getenv("SD_TCP"); a != "" {
		ln, err := p.Listen("tcp", a)
		if err != nil {
			return err
		}
		defer ln.Close()
		go serve(ln)
	}
	if a := os.Getenv("SD_UDP"); a != "" {
		pc, err := p.ListenPacket("udp", a)
		if err != nil {
			return err
		}
		defer pc.Close()
	}
	if err := p.Ready(); err != nil {
		return err
	}
	if a := os.Getenv("SD_LATE"); a != "" {
		ln, err := p.Listen("tcp", a)
		if err != nil {
			return err
		}
		defer ln.Close()
		go serve(ln)
	}
	say("ready pid=%d", os.Getpid())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	select {
	case <-p.Exit():
	case <-sig:
	}
	return nil
}

// storedMsg is one FDSTORE=1 notification.
type storedMsg struct {
	index int    // in arrival order
	name  string // FDNAME=
	fd    int    // the one descriptor it carried, the notify peer's
	poll  bool   // no FDPOLL=0
}

// storedBy returns the FDSTORE=1 notifications from pid so far.
func (np *notifyPeer) storedBy(t *testing.T, pid int) []storedMsg {
	t.Helper()
	np.mu.Lock()
	defer np.mu.Unlock()
	var out []storedMsg
	for i, m := range np.msgs {
		if m.pid != pid || !strings.Contains(m.text, "FDSTORE=1") {
			continue
		}
		s := storedMsg{index: i, poll: !strings.Contains(m.text, "FDPOLL=0"), fd: -1}
		for _, l := range strings.Split(m.text, "\n") {
			if v, ok := strings.CutPrefix(l, "FDNAME="); ok {
				s.name = v
			}
		}
		if len(m.fds) != 1 {
			t.Errorf("FDSTORE=1 from %d with %d descriptors, want 1 per name: %q", pid, len(m.fds), m.text)
		} else {
			s.fd = m.fds[0]
		}
		out = append(out, s)
	}
	return out
}

// removedBy returns the names pid removed from the store so far.
func (np *notifyPeer) removedBy(pid int) []string {
	np.mu.Lock()
	defer np.mu.Unlock()
	var out []string
	for _, m := range np.msgs {
		if m.pid == pid && strings.Contains(m.text, "FDSTOREREMOVE=1") {
			for _, l := range strings.Split(m.text, "\n") {
				if v, ok := strings.CutPrefix(l, "FDNAME="); ok {
					out = append(out, v)
				}
			}
		}
	}
	return out
}

// boundTo returns the local address of the socket d as a string.
func boundTo(t *testing.T, d int) string {
	t.Helper()
	sa, err := unix.Getsockname(d)
	if err != nil {
		t.Fatal(err)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	}
	t.Fatalf("socket %d: %T", d, sa)
	return ""
}

// TestSystemdStoreAtReady: a service's sockets go to (a stand-in for)
// systemd's descriptor store by themselves, one name each, before READY=1
// (and one made after Ready at once), so that a crash loses none:
//
//   - A listens on TCP and UDP and, after Ready, on a second TCP port;
//     each socket is stored, under a name of its own, with FDPOLL=0;
//   - A is killed (SIGKILL); connections made meanwhile wait on the
//     stored socket;
//   - B, started with what the store holds (LISTEN_FDS), uses only the
//     first TCP listener: it serves the waiting connections, stores
//     nothing (it created nothing) and removes the other two names
//     before its READY=1;
//   - C takes over from B listening on a new port only: it stores that
//     one, after B named it the main process, and removes the name of the
//     listener it inherited and did not use.
func TestSystemdStoreAtReady(t *testing.T) {
	restartCheckLeaks(t)
	dir := t.TempDir()
	notify := filepath.Join(dir, "notify")
	np := newNotifyPeer(t, notify)
	tcp, udp, late, next := freeTCPAddr(t), freeUDPAddr(t), freeTCPAddr(t), freeTCPAddr(t)
	handoff := "SD_HANDOFF=" + filepath.Join(dir, "handoff.sock")
	a := startRestartChild(t, "", "systemd-autostore", nil, handoff, "NOTIFY_SOCKET="+notify,
		"SD_TCP="+tcp, "SD_UDP="+udp, "SD_LATE="+late)
	pidA, _ := strconv.Atoi(field(a.expect("ready"), "pid"))
	ready := np.await(t, pidA, "READY=1")
	deadline := time.Now().Add(20 * time.Second)
	for len(np.storedBy(t, pidA)) < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	stored := np.storedBy(t, pidA)
	if len(stored) != 3 {
		t.Fatalf("A stored %d sockets, want 3: %+v", len(stored), stored)
	}
	names := map[string]string{} // address -> name
	for i, s := range stored {
		addr := boundTo(t, s.fd)
		names[addr] = s.name
		if s.poll {
			t.Errorf("%s stored without FDPOLL=0", s.name)
		}
		if !strings.HasPrefix(s.name, "fdpass/") || strings.ContainsAny(s.name, ":\n") || len(s.name) > 255 {
			t.Errorf("store name %q", s.name)
		}
		if early := addr != late; early != (s.index < ready) {
			t.Errorf("socket %d (%s, %s) stored as notification #%d, READY=1 is #%d: want the ones made before Ready stored before it, the other after", i, addr, s.name, s.index, ready)
		}
	}
	if len(names) != 3 || names[tcp] == "" || names[udp] == "" || names[late] == "" {
		t.Fatalf("stored sockets by address: %v, want %s, %s and %s", names, tcp, udp, late)
	}

	// A crash: the store keeps the sockets, the kernel queues
	// connections on the listeners.
	a.cmd.Process.Kill()
	a.wait()
	var waiting []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", tcp)
		if err != nil {
			t.Fatalf("refused while no process ran: %v", err)
		}
		defer c.Close()
		waiting = append(waiting, c)
	}

	// B, as systemd starts it after the crash: the store's sockets as
	// LISTEN_FDS, named.
	var files []*os.File
	var fdnames []string
	for _, s := range stored {
		d, err := fd.DupFD(s.fd)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(d), s.name)
		defer f.Close()
		files, fdnames = append(files, f), append(fdnames, s.name)
	}
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -test.run='^$'`, os.Args[0])
	cmd.Env = append(os.Environ(), handoff, "NOTIFY_SOCKET="+notify, "SD_TCP="+tcp, childtest.Env+"=systemd-autostore",
		"LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+strings.Join(fdnames, ":"))
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for _, f := range files {
		f.Close()
	}
	if sc := bufio.NewScanner(out); !sc.Scan() || !strings.HasPrefix(sc.Text(), "ready") {
		t.Fatalf("B did not get ready: %q", sc.Text())
	}
	pidB := cmd.Process.Pid
	readyB := np.await(t, pidB, "READY=1")
	for i, c := range waiting {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		reply, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || reply != "pid="+strconv.Itoa(pidB)+"\n" {
			t.Errorf("connection %d made while no process ran: %q, %v; want B's answer", i, reply, err)
		}
	}
	if s := np.storedBy(t, pidB); len(s) != 0 {
		t.Errorf("B stored %d sockets; it created none", len(s))
	}
	removed := np.removedBy(pidB)
	if len(removed) != 2 || !(slices.Contains(removed, names[udp]) && slices.Contains(removed, names[late])) {
		t.Errorf("B removed %q, want %q and %q (what it did not use)", removed, names[udp], names[late])
	}
	if i := np.index(pidB, "FDSTOREREMOVE=1"); i > readyB {
		t.Errorf("B removed after READY=1 (#%d, #%d)", i, readyB)
	}

	// C takes over from B on a new port only.
	c := startRestartChild(t, "", "systemd-autostore", nil, handoff, "NOTIFY_SOCKET="+notify, "SD_TCP="+next)
	pidC, _ := strconv.Atoi(field(c.expect("ready"), "pid"))
	if err := cmd.Wait(); err != nil {
		t.Errorf("B: %v", err)
	}
	readyC := np.await(t, pidC, "READY=1")
	mainC := np.await(t, pidB, "MAINPID="+strconv.Itoa(pidC))
	storedC := np.storedBy(t, pidC)
	if len(storedC) != 1 || boundTo(t, storedC[0].fd) != next || !(mainC < storedC[0].index && storedC[0].index < readyC) {
		t.Errorf("C stored %+v (MAINPID=C #%d, C's READY=1 #%d); want its listener on %s, after MAINPID= and before READY=1", storedC, mainC, readyC, next)
	}
	if removed := np.removedBy(pidC); len(removed) != 1 || removed[0] != names[tcp] {
		t.Errorf("C removed %q, want %q (inherited, not used)", removed, names[tcp])
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	c.mustExit()
}
