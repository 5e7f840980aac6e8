package main_test

import (
	"bufio"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/flood"
	"github.com/fdpass/fdpass/examples/internal/proc"
)

// TestDescriptorFlood: limited to 1,024 descriptors and flooded with 3,000
// connections held for 3 s, the chat server must not stop accepting for
// good: it answers again within 5 s of the flood's end, and, flooded
// again, hands over to a successor under the same limit (flood.Survive).
func TestDescriptorFlood(t *testing.T) {
	dir := t.TempDir()
	bin := proc.BuildT(t, dir, "github.com/fdpass/fdpass/examples/chat")
	args := []string{"-graceful", filepath.Join(dir, "handoff.sock"), "-listen", "127.0.0.1:0", "-drain", "2s"}
	flood.Survive(t, bin, args, hello)
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
