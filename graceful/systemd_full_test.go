//go:build linux

package graceful_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
)

var _ = registerRestartRole("systemd-full", systemdFull)

// systemdFull is a service under systemd whose descriptor table is full:
// after Ready it takes every descriptor number under its limit but one,
// listens on a new socket with that one, says so, and closes the Process.
func systemdFull() error {
	p, err := graceful.New(graceful.Options{Path: os.Getenv("SD_HANDOFF")})
	if err != nil {
		return err
	}
	defer p.Close()
	// Ready starts, in the background, a duplicate of the handoff
	// listener for the next successor and the handoff accept loop's
	// reserve descriptor (/dev/null): wait for both, or they would take
	// the number freed below.
	socks, nulls, err := openKinds()
	if err != nil {
		return err
	}
	if err := p.Ready(); err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		s, n, err := openKinds()
		if err != nil {
			return err
		}
		if s > socks && n > nulls {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after Ready: %d sockets and %d /dev/null open, want more than %d and %d", s, n, socks, nulls)
		}
		time.Sleep(time.Millisecond)
	}
	n, err := fd.Count()
	if err != nil {
		return err
	}
	if err := lowerNoFile(strconv.Itoa(n + 32)); err != nil {
		return err
	}
	var fill []int
	defer func() { fd.CloseAll(fill) }()
	for {
		f, err := syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if errors.Is(err, syscall.EMFILE) {
			break
		}
		if err != nil {
			return err
		}
		fill = append(fill, f)
	}
	// One number free, for the socket Listen makes.
	syscall.Close(fill[len(fill)-1])
	fill = fill[:len(fill)-1]
	ln, err := p.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	if f, err := syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0); err == nil {
		syscall.Close(f)
		return errors.New("a descriptor number is free after Listen")
	}
	id, err := fd.IdentifyConn(ln)
	if err != nil {
		return err
	}
	say("full pid=%d ino=%d", os.Getpid(), id.Ino)
	return p.Close()
}

// openKinds counts the process's open sockets and descriptors of
// /dev/null.
func openKinds() (sockets, nulls int, err error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, 0, err
	}
	for _, e := range ents {
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		switch {
		case err != nil:
		case strings.HasPrefix(l, "socket:"):
			sockets++
		case l == os.DevNull:
			nulls++
		}
	}
	return sockets, nulls, nil
}

// TestSystemdStoreFull: a socket made after Ready is stored though every
// other descriptor number is taken: the duplicate that goes to the store
// and the notification's socket come from the spare descriptors the
// Process keeps. STOPPING=1 is checked to arrive too, but it does not
// need the spares here: Close has closed the handoff listener and its
// accept loop's reserve by then, which frees numbers for it.
func TestSystemdStoreFull(t *testing.T) {
	restartCheckLeaks(t)
	dir := t.TempDir()
	np := newNotifyPeer(t, filepath.Join(dir, "notify"))
	c := startRestartChild(t, "", "systemd-full", nil,
		"SD_HANDOFF="+filepath.Join(dir, "handoff.sock"),
		"NOTIFY_SOCKET="+filepath.Join(dir, "notify"))
	line := c.expect("full")
	c.mustExit()
	pid, _ := strconv.Atoi(field(line, "pid"))
	np.await(t, pid, "READY=1")
	if fds := np.stored(t, pid, "/"+field(line, "ino")); len(fds) != 1 {
		t.Errorf("the socket made with the table full: stored with %d descriptors, want 1", len(fds))
	}
	np.await(t, pid, "STOPPING=1")
}
