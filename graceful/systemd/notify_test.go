//go:build linux

package systemd_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful/systemd"
	"github.com/fdpass/fdpass/internal/childtest"
	"golang.org/x/sys/unix"
)

// memfds returns n distinct descriptors (each memfd has its own inode),
// closed when the test ends.
func memfds(t testing.TB, n int) []int {
	t.Helper()
	fds := make([]int, 0, n)
	t.Cleanup(func() { closeFDs(fds) })
	for range n {
		f, err := unix.MemfdCreate("fdpass-systemd-test", unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, f)
	}
	return fds
}

// sameFiles checks that got are the same open files as want, in order.
func sameFiles(t testing.TB, want, got []int) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d descriptors, want %d", len(got), len(want))
	}
	for i := range want {
		same, err := fd.Same(want[i], got[i])
		if err != nil {
			t.Fatal(err)
		}
		if !same {
			t.Fatalf("descriptor %d is not the one sent", i)
		}
	}
}

func monotonicUsec(t testing.TB) uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3
}

func TestNotifier(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(map[bool]string{false: "path", true: "abstract"}[abstract], func(t *testing.T) {
			checkLeaks(t)
			peer := newNotifyPeer(t, abstract)
			t.Setenv("NOTIFY_SOCKET", peer.addr)
			n, err := systemd.NewNotifier()
			if err != nil || n == nil {
				t.Fatalf("NewNotifier() = %v, %v", n, err)
			}
			if got := os.Getenv("NOTIFY_SOCKET"); got != peer.addr {
				t.Errorf("NOTIFY_SOCKET = %q after NewNotifier, want it kept", got)
			}
			me := os.Getpid()

			must(t, n.Ready())
			peer.expect(me, map[string]string{"READY": "1"})

			before := monotonicUsec(t)
			must(t, n.Reloading())
			after := monotonicUsec(t)
			m := peer.expect(me, map[string]string{"RELOADING": "1", "MONOTONIC_USEC": "*"})
			if us, _ := strconv.ParseUint(m.Vars["MONOTONIC_USEC"], 10, 64); us < before || us > after {
				t.Errorf("MONOTONIC_USEC=%d, want within [%d, %d]", us, before, after)
			}

			must(t, n.Stopping())
			peer.expect(me, map[string]string{"STOPPING": "1"})

			must(t, n.Status("serving: 3 listeners, 1 = 1"))
			peer.expect(me, map[string]string{"STATUS": "serving: 3 listeners, 1 = 1"})
			must(t, n.Status(""))
			peer.expect(me, map[string]string{"STATUS": ""})

			must(t, n.MainPID(me))
			peer.expect(me, map[string]string{"MAINPID": strconv.Itoa(me)})

			one := memfds(t, 1)
			must(t, n.Notify("X_FDPASS_TEST=1\nSTATUS=generic", one...))
			m = peer.expect(me, map[string]string{"X_FDPASS_TEST": "1", "STATUS": "generic"})
			sameFiles(t, one, m.FDs)

			must(t, n.Store("web", one...))
			m = peer.expect(me, map[string]string{"FDSTORE": "1", "FDNAME": "web"})
			sameFiles(t, one, m.FDs)

			// More than two messages' worth: 253, 253 and the rest, each
			// named.
			many := memfds(t, 2*systemd.MaxFDsPerMessage+100)
			must(t, n.Store("many", many...))
			for off := 0; off < len(many); off += systemd.MaxFDsPerMessage {
				m = peer.expect(me, map[string]string{"FDSTORE": "1", "FDNAME": "many"})
				sameFiles(t, many[off:min(off+systemd.MaxFDsPerMessage, len(many))], m.FDs)
			}

			must(t, n.Remove("many"))
			peer.expect(me, map[string]string{"FDSTOREREMOVE": "1", "FDNAME": "many"})
			peer.expectNothing()

			// Sending never closes the caller's descriptors.
			for _, f := range append(one, many...) {
				if !isOpen(f) {
					t.Fatalf("descriptor %d closed by sending it", f)
				}
			}
		})
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestNotifierChild notifies from another process: the credentials the
// peer reads are the kernel's, so they name that process.
func TestNotifierChild(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(map[bool]string{false: "path", true: "abstract"}[abstract], func(t *testing.T) {
			checkLeaks(t)
			peer := newNotifyPeer(t, abstract)
			c := startChild(t, "notify", []string{"NOTIFY_SOCKET=" + peer.addr})
			pid := c.Pid()
			peer.expect(pid, map[string]string{"STATUS": "starting"})
			m := peer.expect(pid, map[string]string{"FDSTORE": "1", "FDNAME": "tcp"})
			if len(m.FDs) != 1 {
				t.Fatalf("%d descriptors stored, want 1", len(m.FDs))
			}
			if err := isListener(m.FDs[0]); err != nil {
				t.Error(err)
			}
			peer.expect(pid, map[string]string{"MAINPID": strconv.Itoa(pid)})
			peer.expect(pid, map[string]string{"READY": "1"})
			peer.expect(pid, map[string]string{"STOPPING": "1"})
			c.MustExit()
			peer.expectNothing()
		})
	}
}

var _ = childtest.Register("notify", func() error {
	leaks, err := countLeaks(0)
	if err != nil {
		return err
	}
	n, err := systemd.NewNotifier()
	if err != nil {
		return err
	}
	if n == nil {
		return errors.New("no Notifier with NOTIFY_SOCKET set")
	}
	if err := n.Status("starting"); err != nil {
		return err
	}
	ln, err := listenTCP()
	if err != nil {
		return err
	}
	lfd, err := fd.Dup(ln)
	if err != nil {
		return err
	}
	err = n.Store("tcp", lfd)
	fd.Close(lfd)
	ln.Close()
	if err != nil {
		return err
	}
	for _, f := range []func() error{
		func() error { return n.MainPID(os.Getpid()) },
		n.Ready,
		n.Stopping,
	} {
		if err := f(); err != nil {
			return err
		}
	}
	return leaks()
})

// TestNotifyPeerSystemdNotify checks the test's notify peer against the
// real sender, systemd-notify(1) (Debian package systemd), so the peer's
// reading of the protocol is systemd's own.
func TestNotifyPeerSystemdNotify(t *testing.T) {
	const tool = "/usr/bin/systemd-notify"
	if _, err := os.Stat(tool); err != nil {
		t.Skipf("%s not installed (Debian package systemd): %v", tool, err)
	}
	checkLeaks(t)
	peer := newNotifyPeer(t, true)
	c := childtest.Start(t, "", childtest.Options{
		Bin:   tool,
		Args:  []string{"--ready", "--status=up and running"},
		Env:   []string{"NOTIFY_SOCKET=" + peer.addr},
		Unset: systemdEnv,
	})
	// systemd-notify notifies on behalf of its parent: it sends
	// SCM_CREDENTIALS with the parent's PID, which the kernel lets only a
	// privileged sender claim; unprivileged, it sends its own. The peer
	// reads whichever the kernel let through.
	pid := c.Pid()
	m := peer.expect(-1, map[string]string{"READY": "1", "STATUS": "up and running"})
	if int(m.PID) != pid && int(m.PID) != os.Getpid() {
		t.Errorf("READY=1 from pid %d, want %d or its parent %d", m.PID, pid, os.Getpid())
	}
	// systemd-notify then waits until the manager has read that: a
	// barrier, released by closing the descriptor it sent.
	m = peer.expect(pid, map[string]string{"BARRIER": "1"})
	closeFDs(m.FDs)
	m.FDs = nil
	c.MustExit()
}

// TestNotifierUnset: without NOTIFY_SOCKET nothing happens, and no error,
// for every call with valid arguments.
func TestNotifierUnset(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	fds := memfds(t, 3)
	checkLeaks(t)
	before := count(t)
	n, err := systemd.NewNotifier()
	if n != nil || err != nil {
		t.Fatalf("NewNotifier() = %v, %v; want nil, nil", n, err)
	}
	for name, call := range map[string]func() error{
		"Ready":     n.Ready,
		"Reloading": n.Reloading,
		"Stopping":  n.Stopping,
		"Status":    func() error { return n.Status("x") },
		"MainPID":   func() error { return n.MainPID(1) },
		"Notify":    func() error { return n.Notify("READY=1", fds...) },
		"Store":     func() error { return n.Store("web", fds...) },
		"Remove":    func() error { return n.Remove("web") },
	} {
		if err := call(); err != nil {
			t.Errorf("%s on a nil Notifier: %v", name, err)
		}
	}
	if after := count(t); after != before {
		t.Errorf("%d descriptors open, %d before: a nil Notifier opened something", after, before)
	}
	for _, f := range fds {
		if !isOpen(f) {
			t.Errorf("descriptor %d closed", f)
		}
	}
	// Arguments are checked all the same, so mistakes show outside
	// systemd too.
	if err := n.Store("a:b", fds...); !errors.Is(err, systemd.ErrName) {
		t.Errorf("Store(a:b) on a nil Notifier = %v, want ErrName", err)
	}
}

func TestNotifierEnvironment(t *testing.T) {
	for _, addr := range []string{"run/notify", "vsock:2:1234", "@", "/", "x"} {
		t.Setenv("NOTIFY_SOCKET", addr)
		if n, err := systemd.NewNotifier(); !errors.Is(err, systemd.ErrEnvironment) {
			t.Errorf("NOTIFY_SOCKET=%q: NewNotifier() = %v, %v; want ErrEnvironment", addr, n, err)
		}
	}
}

// TestNotifierNoPeer: a socket nobody listens on is an error on the first
// notification, and leaks nothing.
func TestNotifierNoPeer(t *testing.T) {
	checkLeaks(t)
	for _, addr := range []string{filepath.Join(t.TempDir(), "none"), "@fdpass-systemd-test/nobody"} {
		n, err := systemd.NotifierAt(addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Ready(); err == nil {
			t.Errorf("Ready to %s: no error", addr)
		}
		if err := n.Store("x", memfds(t, 1)...); err == nil {
			t.Errorf("Store to %s: no error", addr)
		}
	}
}

// TestNotifierInvalid: bad arguments are errors and send nothing.
func TestNotifierInvalid(t *testing.T) {
	checkLeaks(t)
	peer := newNotifyPeer(t, false)
	n, err := systemd.NotifierAt(peer.addr)
	if err != nil {
		t.Fatal(err)
	}
	one := memfds(t, 1)
	tooMany := make([]int, systemd.MaxFDsPerMessage+1)
	for i := range tooMany {
		tooMany[i] = one[0]
	}
	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"Notify empty", func() error { return n.Notify("") }, systemd.ErrState},
		{"Notify NUL", func() error { return n.Notify("READY=1\x00") }, systemd.ErrState},
		{"Notify long", func() error { return n.Notify("STATUS=" + strings.Repeat("x", systemd.MaxStateLen)) }, systemd.ErrState},
		{"Notify 254 fds", func() error { return n.Notify("X_FDPASS_TEST=1", tooMany...) }, systemd.ErrFDCount},
		{"Status newline", func() error { return n.Status("a\nREADY=1") }, systemd.ErrState},
		{"MainPID 0", func() error { return n.MainPID(0) }, systemd.ErrState},
		{"MainPID -1", func() error { return n.MainPID(-1) }, systemd.ErrState},
		{"Store no fds", func() error { return n.Store("web") }, systemd.ErrFDCount},
		{"Store colon", func() error { return n.Store("a:b", one...) }, systemd.ErrName},
		{"Store empty name", func() error { return n.Store("", one...) }, systemd.ErrName},
		{"Remove long", func() error { return n.Remove(strings.Repeat("a", 256)) }, systemd.ErrName},
		{"Remove control", func() error { return n.Remove("a\nREADY=1") }, systemd.ErrName},
	} {
		if err := tc.call(); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	peer.expectNothing()
	// The longest valid message still goes through.
	must(t, n.Notify("STATUS="+strings.Repeat("x", systemd.MaxStateLen-len("STATUS="))))
	peer.expect(os.Getpid(), map[string]string{"STATUS": "*"})
}

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"web", true},
		{"with space ~!@#", true},
		{"stored", true},
		{strings.Repeat("n", 255), true},
		{strings.Repeat("n", 256), false},
		{"", false},
		{"a:b", false},
		{"tab\there", false},
		{"nul\x00", false},
		{"del\x7f", false},
		{"caf\u00e9", false},
	} {
		err := systemd.CheckName(tc.name)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, systemd.ErrName)) {
			t.Errorf("CheckName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// isListener checks that n is a listening TCP socket.
func isListener(n int) error {
	v, err := unix.GetsockoptInt(n, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil || v != 1 {
		return fmt.Errorf("descriptor %d is not a listener (%d, %v)", n, v, err)
	}
	return nil
}
