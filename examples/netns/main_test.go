//go:build linux

package main_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/proc"
	"github.com/fdpass/fdpass/kinds"
	"github.com/vishvananda/netns"
)

// TestWorkerServesNamespace runs the broker and the worker as separate
// processes: a client inside the namespace reaches the worker, which runs
// in the root namespace; the same address in the root namespace has
// nobody listening.
func TestWorkerServesNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("needs ip from iproute2")
	}
	name := fmt.Sprintf("fdpass-e2e-%d", os.Getpid())
	if out, err := exec.Command(ip, "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command(ip, "netns", "del", name).Run() })
	if out, err := exec.Command(ip, "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set lo up: %v: %s", err, out)
	}

	dir := t.TempDir()
	bin := proc.BuildT(t, dir, "github.com/fdpass/fdpass/examples/netns")
	sock := filepath.Join(dir, "broker.sock")
	// The address, in the root namespace, is this test's: nobody else on
	// the machine can listen there, so a connection to it that the worker
	// answers went to the wrong namespace. The same address is free in the
	// new namespace.
	own, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	addr := own.Addr().String()
	broker := proc.StartT(t, bin, "-role", "broker", "-ns", name, "-listen", addr, "-sock", sock)
	bline, err := broker.Await("ready broker", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	worker := proc.StartT(t, bin, "-role", "worker", "-sock", sock)
	wline, err := worker.Await("ready worker", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if proc.Field(wline, "id") != proc.Field(bline, "id") || proc.Field(wline, "id") == proc.Field(wline, "own-netns") {
		t.Fatalf("namespace identities: broker %q, worker %q", bline, wline)
	}
	// Only the worker holds the listener now.
	broker.Kill()

	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var greeting string
	err = kinds.InNetNS(h, func() error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		greeting, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	if err != nil {
		t.Fatalf("client inside the namespace: %v", err)
	}
	want := fmt.Sprintf("hello from worker pid %d, serving namespace %s", worker.PID(), name)
	if !strings.HasPrefix(greeting, want) {
		t.Fatalf("greeting %q, want it to start with %q", greeting, want)
	}
	// In the root namespace the address is this test's listener, not the
	// worker's.
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("root namespace dial: %v", err)
	}
	defer c.Close()
	own.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	ac, err := own.Accept()
	if err != nil {
		t.Fatalf("the root namespace's %s: %v", addr, err)
	}
	defer ac.Close()
	if ac.RemoteAddr().String() != c.LocalAddr().String() {
		t.Fatalf("the root namespace's %s accepted %s, want %s", addr, ac.RemoteAddr(), c.LocalAddr())
	}
}
