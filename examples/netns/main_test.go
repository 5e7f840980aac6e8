//go:build linux

package main_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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
	const addr = "127.0.0.1:18080"
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
	// In the root namespace nothing listens there.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s is reachable from the root namespace", addr)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Logf("root namespace dial: %v", err)
	}
}
