package systemd

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// envNotifySocket is the variable of sd_notify(3).
const envNotifySocket = "NOTIFY_SOCKET"

// Limits of systemd's notification protocol.
const (
	// MaxFDsPerMessage is the most descriptors one notification carries:
	// the kernel's SCM_MAX_FD. Store splits larger sets.
	MaxFDsPerMessage = 253
	// MaxStateLen is the longest notification systemd reads
	// (NOTIFY_BUFFER_MAX); it drops longer datagrams whole.
	MaxStateLen = 4096
	// MaxNameLen is the longest descriptor name systemd accepts
	// (FDNAME_MAX).
	MaxNameLen = 255
)

// Notifier sends notifications to the service manager, as sd_notify(3)
// does: one datagram per notification to the unix socket named by
// NOTIFY_SOCKET, sent by the calling process, whose PID the kernel attaches
// (systemd reads it with SO_PASSCRED and, with NotifyAccess=main, accepts
// only its main process's). No SCM_CREDENTIALS are sent: the kernel's are
// the ones systemd trusts.
//
// The nil *Notifier, which NewNotifier returns when NOTIFY_SOCKET is unset,
// sends nothing: every method checks its arguments and returns nil, so a
// program calls them unconditionally, under systemd or not. A Notifier
// holds no descriptor between calls and is safe for concurrent use.
type Notifier struct {
	addr string
}

// NewNotifier returns a Notifier for the socket named by NOTIFY_SOCKET, or
// nil (and no error) when NOTIFY_SOCKET is unset or empty. It leaves the
// variable set, so that a successor this process starts can notify too.
// An address that is neither a path ("/run/...") nor an abstract name
// ("@...") is ErrEnvironment; on platforms other than Linux a set
// NOTIFY_SOCKET is ErrUnsupported.
func NewNotifier() (*Notifier, error) {
	addr := os.Getenv(envNotifySocket)
	if addr == "" {
		return nil, nil
	}
	return NotifierAt(addr)
}

// NotifierAt returns a Notifier for the unix datagram socket addr: an
// absolute path, or an abstract name written "@name". It does not check
// that anything listens there; the first notification does.
func NotifierAt(addr string) (*Notifier, error) {
	if len(addr) < 2 || (addr[0] != '/' && addr[0] != '@') {
		// systemd also speaks vsock: addresses, to virtual machines.
		return nil, fmt.Errorf("%w: %s=%q: not a path or abstract name", ErrEnvironment, envNotifySocket, addr)
	}
	if !supported {
		return nil, fmt.Errorf("%w: %s", ErrUnsupported, envNotifySocket)
	}
	return &Notifier{addr: addr}, nil
}

// Ready tells systemd that start-up (or a reload) is complete: READY=1.
func (n *Notifier) Ready() error { return n.Notify("READY=1") }

// Reloading tells systemd that the service is reloading its configuration
// or handing over to a successor: RELOADING=1 with MONOTONIC_USEC=, the
// CLOCK_MONOTONIC time in microseconds, which Type=notify-reload requires.
// Ready ends the reload.
func (n *Notifier) Reloading() error {
	if n == nil {
		return nil
	}
	return n.Notify("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatUint(monotonicUsec(), 10))
}

// Stopping tells systemd that the service is shutting down: STOPPING=1.
func (n *Notifier) Stopping() error { return n.Notify("STOPPING=1") }

// Status sets the free-form status line systemctl status shows: STATUS=.
// A status with a newline is ErrState.
func (n *Notifier) Status(status string) error {
	if strings.ContainsRune(status, '\n') {
		return fmt.Errorf("%w: newline in STATUS", ErrState)
	}
	return n.Notify("STATUS=" + status)
}

// MainPID tells systemd that pid is now the service's main process:
// MAINPID=. The predecessor sends it for its successor before it exits,
// so that systemd follows the successor instead of stopping the service;
// systemd accepts it only from the current main process (NotifyAccess=main)
// or any process of the service (NotifyAccess=all), and only for a pid in
// the service's control group unless the sender is root.
func (n *Notifier) MainPID(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("%w: MAINPID=%d", ErrState, pid)
	}
	return n.Notify("MAINPID=" + strconv.Itoa(pid))
}

// Notify sends state, newline-separated KEY=VALUE assignments as
// sd_notify(3) describes, with fds attached (SCM_RIGHTS). systemd receives
// duplicates: the descriptors stay the caller's, and closing them does not
// affect systemd's. An empty state, one longer than MaxStateLen or with a
// NUL byte is ErrState; more than MaxFDsPerMessage descriptors is
// ErrFDCount.
func (n *Notifier) Notify(state string, fds ...int) error {
	if err := checkState(state); err != nil {
		return err
	}
	if len(fds) > MaxFDsPerMessage {
		return fmt.Errorf("%w: %d descriptors in one message, at most %d", ErrFDCount, len(fds), MaxFDsPerMessage)
	}
	if n == nil {
		return nil
	}
	return send(n.addr, state, fds)
}

// Store puts fds into the service's descriptor store under name:
// FDSTORE=1 and FDNAME=name, MaxFDsPerMessage descriptors per message,
// each message named. systemd keeps duplicates (FileDescriptorStoreMax=
// must leave room for them) and passes them back to the next start of the
// service through LISTEN_FDS and LISTEN_FDNAMES, where Activation finds
// them; fds stay the caller's. A name systemd would refuse is ErrName (see
// CheckName); no descriptors, ErrFDCount.
//
// If a message fails after others were sent, the descriptors sent so far
// are stored; Remove(name) drops them.
func (n *Notifier) Store(name string, fds ...int) error {
	if err := CheckName(name); err != nil {
		return err
	}
	if len(fds) == 0 {
		return fmt.Errorf("%w: nothing to store under %q", ErrFDCount, name)
	}
	if n == nil {
		return nil
	}
	state := "FDSTORE=1\nFDNAME=" + name
	for sent := 0; sent < len(fds); sent += MaxFDsPerMessage {
		if err := send(n.addr, state, fds[sent:min(sent+MaxFDsPerMessage, len(fds))]); err != nil {
			if sent > 0 {
				return fmt.Errorf("systemd: stored %d of %d descriptors under %q: %w", sent, len(fds), name, err)
			}
			return err
		}
	}
	return nil
}

// Remove drops every descriptor stored under name from the service's
// descriptor store: FDSTOREREMOVE=1 and FDNAME=name. systemd closes its
// duplicates; descriptors this process holds are not affected. An invalid
// name is ErrName.
func (n *Notifier) Remove(name string) error {
	if err := CheckName(name); err != nil {
		return err
	}
	return n.Notify("FDSTOREREMOVE=1\nFDNAME=" + name)
}

// CheckName returns an error matching ErrName unless systemd accepts name
// as a descriptor name (fdname_is_valid): at most MaxNameLen bytes of
// printable ASCII, without ':', which separates names in LISTEN_FDNAMES.
// systemd also accepts the empty name; CheckName does not, so that every
// stored set can be told apart and removed.
func CheckName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrName)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrName, len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c >= 0x7f || c == ':' {
			return fmt.Errorf("%w: %q: byte %#02x at %d", ErrName, name, c, i)
		}
	}
	return nil
}

func checkState(state string) error {
	switch {
	case state == "":
		return fmt.Errorf("%w: empty", ErrState)
	case len(state) > MaxStateLen:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrState, len(state), MaxStateLen)
	case strings.IndexByte(state, 0) >= 0:
		return fmt.Errorf("%w: NUL byte", ErrState)
	}
	return nil
}
