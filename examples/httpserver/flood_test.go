package main_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/flood"
	"github.com/fdpass/fdpass/examples/internal/proc"
)

// TestDescriptorFlood: a server limited to 1,024 descriptors, flooded with
// 3,000 connections held for 3 s, runs out of descriptors (EMFILE on
// accept) and must not stop accepting for good: once the flood ends it
// answers again within 5 s, and still hands over.
func TestDescriptorFlood(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("needs prlimit (util-linux)")
	}
	dir := t.TempDir()
	bin := proc.BuildT(t, dir, "github.com/fdpass/fdpass/examples/httpserver")
	args := []string{"-graceful", filepath.Join(dir, "handoff.sock"), "-listen", "127.0.0.1:0", "-drain", "5s"}
	first := proc.StartT(t, prlimit, append([]string{"--nofile=1024:1024", "--", bin}, args...)...)
	line, err := first.Await("ready", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	addr := proc.Field(line, "addr")
	held := flood.Hold(addr, 3000, 3*time.Second)
	if held < 1100 {
		t.Fatalf("the flood held only %d connections: the server did not run out of descriptors", held)
	}
	ended := time.Now()
	for {
		err := get(addr)
		if err == nil {
			break
		}
		if time.Since(ended) > 5*time.Second {
			t.Fatalf("no answer within 5 s of the flood's end: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("answering %v after the flood of %d connections ended", time.Since(ended).Round(time.Millisecond), held)
	next := proc.StartT(t, bin, args...)
	if _, err := next.Await("ready", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Await("exit", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := get(addr); err != nil {
		t.Fatalf("after the handoff: %v", err)
	}
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
