package main_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/flood"
	"github.com/fdpass/fdpass/examples/internal/proc"
)

// TestDescriptorFlood: a server limited to 1,024 descriptors, flooded with
// 3,000 connections held for 3 s, runs out of descriptors (EMFILE on
// accept) and must not stop accepting for good: once the flood ends it
// answers again within 5 s, and, flooded again, hands over to a successor
// under the same limit (flood.Survive).
func TestDescriptorFlood(t *testing.T) {
	dir := t.TempDir()
	bin := proc.BuildT(t, dir, "github.com/fdpass/fdpass/examples/httpserver")
	args := []string{"-graceful", filepath.Join(dir, "handoff.sock"), "-listen", "127.0.0.1:0", "-drain", "5s"}
	flood.Survive(t, bin, args, get)
}

// get makes one request on a connection of its own.
func get(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
