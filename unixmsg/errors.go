package unixmsg

import (
	"errors"
	"fmt"

	"github.com/fdpass/fdpass/unixmsg/wire"
)

// Errors. Every error returned by this package that concerns the peer's
// input wraps one of these; match them with errors.Is. Those the wire
// format defines are package wire's, under the same names.
var (
	// ErrBadMagic: the peer does not speak this protocol.
	ErrBadMagic = wire.ErrBadMagic
	// ErrVersion: the peer speaks a version of the protocol this one does not.
	ErrVersion = wire.ErrVersion
	// ErrMalformed: a frame or record does not follow the wire format.
	ErrMalformed = wire.ErrMalformed
	// ErrLimit: the peer announced or sent more than a limit allows.
	ErrLimit = wire.ErrLimit
	// ErrMissingFDs: fewer descriptors arrived than a frame announced.
	ErrMissingFDs = wire.ErrMissingFDs
	// ErrUnexpectedFDs: descriptors arrived that no frame announced, or more
	// than announced.
	ErrUnexpectedFDs = wire.ErrUnexpectedFDs
	// ErrControlTruncated: the kernel set MSG_CTRUNC; descriptors were lost
	// (control buffer too small, or the receiver ran out of descriptors).
	ErrControlTruncated = errors.New("unixmsg: control message truncated (MSG_CTRUNC)")
	// ErrTruncated: a message was longer than the receive buffer (MSG_TRUNC).
	ErrTruncated = errors.New("unixmsg: message truncated (MSG_TRUNC)")
	// ErrUnexpectedControl: a control message other than SCM_RIGHTS arrived.
	ErrUnexpectedControl = wire.ErrUnexpectedControl
	// ErrKindMismatch: a descriptor is not of the kind its sender declared.
	// Errors that wrap it also match kinds.ErrMismatch.
	ErrKindMismatch = errors.New("unixmsg: descriptor kind does not match the declared kind")
	// ErrRejected: the receiver refused the batch; the error says why.
	ErrRejected = errors.New("unixmsg: batch rejected by peer")
	// ErrUnexpectedEOF: the peer closed the connection in the middle of a batch.
	ErrUnexpectedEOF = errors.New("unixmsg: connection closed in the middle of a batch")
	// ErrBroken: an earlier error left the connection in an unknown state.
	ErrBroken = errors.New("unixmsg: connection unusable after an earlier error")
	// ErrUnsupported: the feature is Linux-only. It wraps
	// errors.ErrUnsupported.
	ErrUnsupported = fmt.Errorf("unixmsg: %w on this platform", errors.ErrUnsupported)
	// ErrNotFound: no item has that name.
	ErrNotFound = errors.New("unixmsg: no such item")
	// ErrTaken: the item's descriptor was already taken or closed.
	ErrTaken = errors.New("unixmsg: item already taken")
	// ErrDuplicateName: two items of a batch share a name.
	ErrDuplicateName = errors.New("unixmsg: duplicate item name")
	// ErrWrongKind: the item cannot become the requested Go type.
	ErrWrongKind = errors.New("unixmsg: item is of another kind")
)

// kindError reports a received descriptor that is not what was declared. It
// matches both ErrKindMismatch and kinds.ErrMismatch.
type kindError struct {
	index int
	name  string
	err   error
}

func (e *kindError) Error() string {
	return fmt.Sprintf("unixmsg: item %d (%q): %v", e.index, e.name, e.err)
}

func (e *kindError) Unwrap() []error { return []error{ErrKindMismatch, e.err} }

// RejectedError is returned to a sender whose batch the receiver refused. It
// matches ErrRejected; errors.As gives the receiver's verdict (a
// wire.Status) and its reason.
type RejectedError struct {
	Status wire.Status
	Reason string
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("unixmsg: batch rejected by peer (%s): %s", e.Status, e.Reason)
}

// Is reports whether target is ErrRejected.
func (e *RejectedError) Is(target error) bool { return target == ErrRejected }

func errf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}
