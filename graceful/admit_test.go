//go:build linux

package graceful_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/unixmsg"
)

// TestIdlePeersDoNotBlock: peers that connect to the handoff socket and
// say nothing neither hold a successor off nor stay: each is dropped,
// with a line in the log, once its time for a first message is up.
func TestIdlePeersDoNotBlock(t *testing.T) {
	restartCheckLeaks(t)
	path := filepath.Join(t.TempDir(), "h.sock")
	logs := make(chan string, 100)
	p, _ := readyGeneration(t, graceful.Options{Path: path, Logger: slog.New(chanHandler(logs))})
	var idle []net.Conn
	for range 3 {
		c, err := net.Dial("unixpacket", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	start := time.Now()
	readyGeneration(t, graceful.Options{Path: path})
	<-p.Exit()
	// The idle peers are dropped after 2 s; the successor must not have
	// waited for that.
	if took := time.Since(start); took > time.Second {
		t.Errorf("takeover with idle peers connected took %v", took)
	}
	for range idle {
		awaitLine(t, logs, "dropped a peer that said nothing")
	}
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 64)); err == nil {
			t.Error("an idle peer got an answer")
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Error("an idle peer was not hung up on")
		}
	}
}

var _ = registerRestartRole("flood", roleFlood)

// envFloodFor is how long roleFlood floods.
const envFloodFor = "GT_FLOOD_FOR"

// roleFlood connects to the handoff socket again and again and sends each
// time a batch of 10,000 descriptors, as a peer of another uid might.
func roleFlood() error {
	d, err := time.ParseDuration(os.Getenv(envFloodFor))
	if err != nil {
		return err
	}
	var b unixmsg.Batch
	defer b.Close()
	b.Grow(10000)
	for i := range 10000 {
		if err := b.Add(strconv.Itoa(i), os.Stdin, nil, nil); err != nil {
			return fmt.Errorf("batch of %d: %w", i, err)
		}
	}
	sent := 0
	for end := time.Now().Add(d); time.Now().Before(end); {
		c, err := unixmsg.Dial("unixpacket", os.Getenv(envPath), &unixmsg.Options{NoAck: true})
		if err != nil {
			continue
		}
		c.SetDeadline(time.Now().Add(time.Second))
		if c.Send(&b) == nil {
			sent++
		}
		c.Close()
	}
	say("flooded batches=%d", sent)
	return nil
}

// TestFloodFromOtherUID: a peer of another uid that streams batches of
// 10,000 descriptors at the handoff socket (an abstract name, which no file
// mode protects) costs the predecessor at most a few descriptors, and it
// serves and hands over meanwhile.
func TestFloodFromOtherUID(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to start a child with another uid")
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < 11000 {
		t.Skipf("RLIMIT_NOFILE %d: the flooding child needs 11,000", lim.Cur)
	}
	restartCheckLeaks(t)
	bindir, err := os.MkdirTemp("", "graceful-test")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(bindir)
	os.Chmod(bindir, 0o755)
	bin := filepath.Join(bindir, "graceful.test")
	if err := copyFile(os.Args[0], bin); err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("@fdpass-graceful-flood-%d", os.Getpid())
	p, ln := readyGeneration(t, graceful.Options{Path: path})
	// The duplicates for the next successor are made at Ready: count
	// from when they are.
	exchange(t, path, []byte("hello"))
	base, err := fd.Count()
	if err != nil {
		t.Fatal(err)
	}
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	flood := startRestartChild(t, bin, "flood", nobody, envPath+"="+path, envFloodFor+"=3s")
	peak := base
	sample := func() {
		if n, err := fd.Count(); err == nil {
			peak = max(peak, n)
		}
	}
	// Serve meanwhile: the listener answers.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("ok"))
			c.Close()
		}
	}()
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		sample()
		c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
		if err != nil {
			t.Fatalf("the listener does not answer during the flood: %v", err)
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	// And hand over, with the flood still going.
	p2, err := graceful.New(graceful.Options{Path: path})
	if err != nil {
		t.Fatalf("New during the flood: %v", err)
	}
	defer p2.Close()
	ln2, err := p2.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if err := p2.Ready(); err != nil {
		t.Fatalf("Ready during the flood: %v", err)
	}
	<-p.Exit()
	line := flood.expect("flooded")
	flood.mustExit()
	t.Logf("%s; descriptors of the predecessor: %d before, at most %d during", line, base, peak)
	if field(line, "batches") == "0" {
		t.Error("the flooding child sent no batch: the test tested nothing")
	}
	// A few connections being refused at a time, and the one of each
	// dial above.
	if peak > base+8 {
		t.Errorf("descriptors rose from %d to %d during the flood", base, peak)
	}
}
