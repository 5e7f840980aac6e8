package systemd

import (
	"errors"
	"fmt"
)

// Errors. Errors this package returns wrap one of these where one applies;
// match them with errors.Is.
var (
	// ErrUnsupported is returned where systemd's protocols are not available
	// (every platform but Linux) and the environment asks for them. It
	// wraps errors.ErrUnsupported.
	ErrUnsupported = fmt.Errorf("systemd: %w on this platform", errors.ErrUnsupported)
	// ErrEnvironment: LISTEN_PID, LISTEN_FDS or LISTEN_FDNAMES do not follow
	// sd_listen_fds(3), or NOTIFY_SOCKET is not an address sd_notify(3)
	// understands.
	ErrEnvironment = errors.New("systemd: malformed environment")
	// ErrNotFound: the Set has no descriptor of that name, or none that
	// matches.
	ErrNotFound = errors.New("systemd: no such descriptor")
	// ErrTaken: every descriptor that fits was already taken from the Set.
	// Taking a descriptor twice is this error, never a second descriptor.
	ErrTaken = errors.New("systemd: descriptor already taken")
	// ErrName: a descriptor name systemd would refuse (empty, longer than
	// 255 bytes, a ':' or a byte outside printable ASCII).
	ErrName = errors.New("systemd: invalid descriptor name")
	// ErrState: a notification systemd would refuse or misread (empty,
	// longer than 4096 bytes, a NUL byte, a newline inside one value, a
	// PID that is not positive).
	ErrState = errors.New("systemd: invalid notification")
	// ErrFDCount: more descriptors than one message carries
	// (MaxFDsPerMessage), or none where some are needed.
	ErrFDCount = errors.New("systemd: wrong number of descriptors")
)
