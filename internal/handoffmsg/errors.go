package handoffmsg

import (
	"errors"
	"fmt"
)

// Errors of the handoff exchange. Package graceful exports the first seven
// under the same names; the last two, which it does not, match
// ErrMalformed.
var (
	// ErrVersion: the peer speaks a version of the handoff protocol this
	// one does not.
	ErrVersion = errors.New("graceful: unsupported handoff protocol version")
	// ErrMalformed: a control message does not follow the format, or a
	// peer sent a message out of turn.
	ErrMalformed = errors.New("graceful: malformed handoff message")
	// ErrRefused: the peer answered with an ERROR message.
	ErrRefused = errors.New("graceful: handoff refused by peer")
	// ErrUnauthorized: the peer's credentials failed the check.
	ErrUnauthorized = errors.New("graceful: peer not authorized")
	// ErrTimeout: the handoff did not finish within its time.
	ErrTimeout = errors.New("graceful: handoff timed out")
	// ErrUpgrading: an upgrade is already in progress.
	ErrUpgrading = errors.New("graceful: an upgrade is already in progress")
	// ErrUpgrade: an upgrade failed; the running process serves on.
	ErrUpgrade = errors.New("graceful: upgrade failed")

	// ErrBadMagic: a control message does not start with the handoff
	// magic; the peer does not speak the handoff protocol. It also
	// matches ErrMalformed, as every error a peer's bytes cause does.
	ErrBadMagic = fmt.Errorf("%w: peer does not speak the handoff protocol", ErrMalformed)
	// ErrUnknownMessage: a control message of a type this version does not
	// define. It also matches ErrMalformed.
	ErrUnknownMessage = fmt.Errorf("%w: unknown message type", ErrMalformed)
)

// PeerError is an ERROR message received from the peer. It matches
// ErrRefused, and also ErrUnauthorized, ErrVersion, ErrMalformed or
// ErrTimeout when its code says so.
type PeerError struct {
	Code   ErrorCode
	Reason string
}

func (e *PeerError) Error() string {
	return fmt.Sprintf("graceful: handoff refused by peer (%s): %s", e.Code, e.Reason)
}

// codeErrors maps the codes that have a sentinel to it.
var codeErrors = [...]error{
	CodeUnauthorized: ErrUnauthorized,
	CodeVersion:      ErrVersion,
	CodeProtocol:     ErrMalformed,
	CodeTimeout:      ErrTimeout,
	CodeFailed:       ErrUpgrade,
	CodeBusy:         ErrUpgrading,
}

// Is reports whether target is ErrRefused or the sentinel for e.Code.
func (e *PeerError) Is(target error) bool {
	if target == ErrRefused {
		return true
	}
	return int(e.Code) < len(codeErrors) && codeErrors[e.Code] != nil && codeErrors[e.Code] == target
}

// Errf returns an error that matches sentinel, with a message after it.
func Errf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}

func errf(sentinel error, format string, args ...any) error { return Errf(sentinel, format, args...) }
