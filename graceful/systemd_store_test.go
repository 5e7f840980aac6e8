//go:build linux

package graceful_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/internal/childtest"
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
	cmd.Env = append(append(os.Environ(), env...), childtest.Env+"=systemd-store",
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
