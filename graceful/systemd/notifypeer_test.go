//go:build linux

package systemd_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// notifyPeer plays systemd's side of sd_notify(3), written from the
// protocol's documentation rather than from this package: a unix datagram
// socket with SO_PASSCRED, whose messages are newline-separated
// KEY=VALUE assignments with the sender's credentials (from the kernel)
// and, for FDSTORE=1, descriptors (SCM_RIGHTS).
type notifyPeer struct {
	t    testing.TB
	addr string
	conn *net.UnixConn
}

// notification is one message as the peer read it.
type notification struct {
	PID  int32
	UID  uint32
	Vars map[string]string
	Keys []string // in the order sent
	FDs  []int    // received descriptors; the test closes them
}

var abstractSeq atomic.Uint64

// newNotifyPeer listens on a socket file in a temporary directory, or on an
// abstract name if abstract is set.
func newNotifyPeer(t testing.TB, abstract bool) *notifyPeer {
	t.Helper()
	addr := filepath.Join(t.TempDir(), "notify")
	if abstract {
		addr = fmt.Sprintf("@fdpass-systemd-test/%d/%d", os.Getpid(), abstractSeq.Add(1))
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(s uintptr) {
		serr = unix.SetsockoptInt(int(s), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	p := &notifyPeer{t: t, addr: addr, conn: c}
	t.Cleanup(func() { c.Close() })
	return p
}

// receive reads one notification and checks it the way systemd does; it
// closes what it received if the message is malformed.
func (p *notifyPeer) receive() (*notification, error) {
	// systemd reads at most 4096 bytes (NOTIFY_BUFFER_MAX) and 768
	// descriptors (NOTIFY_FD_MAX) per message.
	buf := make([]byte, 4096+1)
	oob := make([]byte, unix.CmsgSpace(768*4)+unix.CmsgSpace(unix.SizeofUcred))
	if err := p.conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return nil, err
	}
	n, oobn, flags, _, err := p.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	m := &notification{PID: -1, Vars: map[string]string{}}
	cmsgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
	for _, c := range cmsgs {
		if c.Header.Level != unix.SOL_SOCKET {
			perr = errors.Join(perr, fmt.Errorf("control message level %d", c.Header.Level))
			continue
		}
		switch c.Header.Type {
		case unix.SCM_RIGHTS:
			if len(c.Data)%4 != 0 {
				perr = errors.Join(perr, fmt.Errorf("SCM_RIGHTS of %d bytes", len(c.Data)))
				continue
			}
			fds, err := unix.ParseUnixRights(&c)
			perr = errors.Join(perr, err)
			m.FDs = append(m.FDs, fds...)
		case unix.SCM_CREDENTIALS:
			cred, err := unix.ParseUnixCredentials(&c)
			if err != nil {
				perr = errors.Join(perr, err)
				continue
			}
			m.PID, m.UID = cred.Pid, cred.Uid
		default:
			perr = errors.Join(perr, fmt.Errorf("control message type %d", c.Header.Type))
		}
	}
	fail := func(err error) (*notification, error) {
		closeFDs(m.FDs)
		return nil, err
	}
	switch {
	case perr != nil:
		return fail(perr)
	case flags&unix.MSG_TRUNC != 0 || n > 4096:
		return fail(errors.New("notification longer than 4096 bytes"))
	case flags&unix.MSG_CTRUNC != 0:
		return fail(errors.New("control data truncated"))
	case m.PID <= 0:
		return fail(errors.New("no sender credentials"))
	}
	text := string(buf[:n])
	if strings.IndexByte(text, 0) >= 0 {
		return fail(errors.New("NUL byte in notification"))
	}
	for _, line := range strings.Split(text, "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return fail(fmt.Errorf("line %q is not KEY=VALUE", line))
		}
		if _, dup := m.Vars[k]; dup {
			return fail(fmt.Errorf("%s given twice", k))
		}
		m.Vars[k] = v
		m.Keys = append(m.Keys, k)
	}
	if err := checkNotification(m); err != nil {
		return fail(err)
	}
	return m, nil
}

// checkNotification applies the rules systemd's manager applies to the
// assignments it knows.
func checkNotification(m *notification) error {
	for k, v := range m.Vars {
		switch k {
		case "READY", "STOPPING", "FDSTORE", "FDSTOREREMOVE", "BARRIER":
			if v != "1" {
				return fmt.Errorf("%s=%q", k, v)
			}
		case "RELOADING":
			if v != "1" {
				return fmt.Errorf("%s=%q", k, v)
			}
			if _, ok := m.Vars["MONOTONIC_USEC"]; !ok {
				return errors.New("RELOADING=1 without MONOTONIC_USEC")
			}
		case "MONOTONIC_USEC":
			if _, err := strconv.ParseUint(v, 10, 64); err != nil {
				return fmt.Errorf("MONOTONIC_USEC=%q", v)
			}
		case "MAINPID":
			if pid, err := strconv.Atoi(v); err != nil || pid <= 0 {
				return fmt.Errorf("MAINPID=%q", v)
			}
		case "FDNAME":
			if !fdnameValid(v) {
				return fmt.Errorf("FDNAME=%q is not a valid name", v)
			}
		case "STATUS", "FDPOLL", "ERRNO", "WATCHDOG", "EXTEND_TIMEOUT_USEC":
		default:
			// systemd ignores what it does not know; X_ is for
			// applications. A typo here is a bug in the sender.
			if !strings.HasPrefix(k, "X_") {
				return fmt.Errorf("unknown assignment %s", k)
			}
		}
	}
	if _, ok := m.Vars["BARRIER"]; ok {
		// sd_notify_barrier(3): one descriptor, which the manager closes
		// once it has processed everything before it.
		if len(m.FDs) != 1 || len(m.Vars) != 1 {
			return fmt.Errorf("BARRIER=1 with %d descriptors and %d assignments", len(m.FDs), len(m.Vars))
		}
		return nil
	}
	if _, ok := m.Vars["FDSTOREREMOVE"]; ok && m.Vars["FDNAME"] == "" {
		return errors.New("FDSTOREREMOVE=1 without FDNAME")
	}
	if _, ok := m.Vars["FDSTORE"]; ok {
		if len(m.FDs) == 0 {
			return errors.New("FDSTORE=1 without descriptors")
		}
	} else if _, generic := m.Vars["X_FDPASS_TEST"]; len(m.FDs) > 0 && !generic {
		// systemd closes them with a warning; only the test of Notify's
		// generic form sends descriptors without FDSTORE=1, and says so.
		return fmt.Errorf("%d descriptors without FDSTORE=1", len(m.FDs))
	}
	return nil
}

// fdnameValid is systemd's fdname_is_valid: printable ASCII without ':',
// at most 255 bytes.
func fdnameValid(s string) bool {
	for _, c := range []byte(s) {
		if c < ' ' || c >= 127 || c == ':' {
			return false
		}
	}
	return len(s) <= 255
}

// expect receives one notification and checks that it came from pid (any
// if pid is -1) and assigns exactly want (a value of "*" matches any).
func (p *notifyPeer) expect(pid int, want map[string]string) *notification {
	p.t.Helper()
	m, err := p.receive()
	if err != nil {
		p.t.Fatalf("notification: %v", err)
	}
	p.t.Cleanup(func() { closeFDs(m.FDs) })
	if pid != -1 && int(m.PID) != pid {
		p.t.Errorf("notification %v from pid %d, want %d", m.Keys, m.PID, pid)
	}
	if len(m.Vars) != len(want) {
		p.t.Errorf("notification %v, want %v", m.Vars, want)
	}
	for k, v := range want {
		got, ok := m.Vars[k]
		if !ok || (v != "*" && got != v) {
			p.t.Errorf("notification %v: %s=%q, want %q", m.Vars, k, got, v)
		}
	}
	return m
}

// expectNothing checks that no notification is queued. Sends are
// synchronous (the datagram is queued when sendmsg returns), so there is
// nothing to wait for.
func (p *notifyPeer) expectNothing() {
	p.t.Helper()
	buf := make([]byte, 1)
	rc, err := p.conn.SyscallConn()
	if err != nil {
		p.t.Fatal(err)
	}
	var n int
	var rerr error
	if err := rc.Control(func(s uintptr) {
		n, _, rerr = unix.Recvfrom(int(s), buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	}); err != nil {
		p.t.Fatal(err)
	}
	if !errors.Is(rerr, unix.EAGAIN) {
		p.t.Errorf("unexpected notification queued (%d bytes, %v)", n, rerr)
	}
}

func closeFDs(fds []int) {
	for _, f := range fds {
		unix.Close(f)
	}
}
