package graceful

import (
	"errors"
	"fmt"
)

// Errors of the restart API and of the handoff message codec. Errors this
// package returns wrap one of these where one applies; match them with
// errors.Is.
var (
	// ErrUnsupported is returned by the restart API where it is not
	// available (it needs Linux).
	ErrUnsupported = errors.New("graceful: restart API not supported on this platform")

	// ErrBadMagic: a control message does not start with the handoff magic;
	// the peer does not speak the handoff protocol.
	ErrBadMagic = errors.New("graceful: bad magic: peer does not speak the handoff protocol")
	// ErrVersion: the peer speaks a version of the handoff protocol this one
	// does not.
	ErrVersion = errors.New("graceful: unsupported handoff protocol version")
	// ErrUnknownMessage: a control message of a type this version does not
	// define.
	ErrUnknownMessage = errors.New("graceful: unknown handoff message type")
	// ErrMalformed: a control message does not follow the format, or a peer
	// sent a message out of turn.
	ErrMalformed = errors.New("graceful: malformed handoff message")

	// ErrAlreadyRunning: a live process holds the handoff socket and did not
	// hand off (it does not speak the protocol, or the socket is of another
	// type).
	ErrAlreadyRunning = errors.New("graceful: another instance is running and did not hand off")
	// ErrNotSocket: the handoff path exists and is not a socket; it is left
	// alone.
	ErrNotSocket = errors.New("graceful: handoff path exists and is not a socket")
	// ErrUnauthorized: the peer's credentials failed the check (by default:
	// another uid). A successor refused by its predecessor gets an error
	// matching both ErrRefused and ErrUnauthorized.
	ErrUnauthorized = errors.New("graceful: peer not authorized")
	// ErrRefused: the peer answered with an ERROR message; the error is a
	// *HandoffError with the peer's code and reason.
	ErrRefused = errors.New("graceful: handoff refused by peer")
	// ErrHandoff: the handoff failed; the predecessor keeps serving.
	ErrHandoff = errors.New("graceful: handoff failed")
	// ErrReady: Ready was already called.
	ErrReady = errors.New("graceful: Ready already called")
	// ErrNetwork: Listen or ListenPacket was given a network it does not
	// handle.
	ErrNetwork = errors.New("graceful: unsupported network")
	// ErrMigrating: a Conn's Read was interrupted because the connection
	// is being migrated to the successor; call Conn.Handoff.
	ErrMigrating = errors.New("graceful: connection is being migrated")
)

// HandoffError is an ERROR control message received from the peer. It
// matches ErrRefused, and also ErrUnauthorized, ErrVersion or ErrMalformed
// when its code says so.
type HandoffError struct {
	Code   ErrorCode
	Reason string
}

func (e *HandoffError) Error() string {
	return fmt.Sprintf("graceful: handoff refused by peer (%s): %s", e.Code, e.Reason)
}

// Is reports whether target is ErrRefused or the sentinel for e.Code.
func (e *HandoffError) Is(target error) bool {
	if target == ErrRefused {
		return true
	}
	switch e.Code {
	case CodeUnauthorized:
		return target == ErrUnauthorized
	case CodeVersion:
		return target == ErrVersion
	case CodeProtocol:
		return target == ErrMalformed
	}
	return false
}

func errf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}
