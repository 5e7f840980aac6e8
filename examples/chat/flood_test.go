package main_test

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/flood"
	"github.com/fdpass/fdpass/examples/internal/proc"
)

// TestDescriptorFlood: limited to 1,024 descriptors and flooded with 3,000
// connections held for 3 s, the chat server must not stop accepting for
// good: it answers again within 5 s of the flood's end, and still hands
// over.
func TestDescriptorFlood(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("needs prlimit (util-linux)")
	}
	dir := t.TempDir()
	bin := proc.BuildT(t, dir, "github.com/fdpass/fdpass/examples/chat")
	args := []string{"-graceful", filepath.Join(dir, "handoff.sock"), "-listen", "127.0.0.1:0", "-drain", "2s"}
	first := proc.StartT(t, prlimit, append([]string{"--nofile=1024:1024", "--", bin}, args...)...)
	line, err := first.Await("ready", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	addr := proc.Field(line, "addr")
	if held := flood.Hold(addr, 3000, 3*time.Second); held < 1100 {
		t.Fatalf("the flood held only %d connections: the server did not run out of descriptors", held)
	}
	ended := time.Now()
	for {
		err := hello(addr)
		if err == nil {
			break
		}
		if time.Since(ended) > 5*time.Second {
			t.Fatalf("no answer within 5 s of the flood's end: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	next := proc.StartT(t, bin, args...)
	if _, err := next.Await("ready", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Await("exit", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := hello(addr); err != nil {
		t.Fatalf("after the handoff: %v", err)
	}
}

// hello says one line on a connection of its own and reads the answer.
func hello(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "hello\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasSuffix(line, " hello\n") {
		return fmt.Errorf("answer %q", line)
	}
	return nil
}
