package wire

import (
	"errors"
	"fmt"
)

// Errors. Every error the parsers and the Decoder return for what a peer
// sent wraps one of these, and the encoders' errors wrap ErrLimit or
// ErrMalformed; match them with errors.Is. Package unixmsg returns the
// same values under the same names.
var (
	// ErrBadMagic: the peer does not speak this protocol.
	ErrBadMagic = errors.New("unixmsg: bad magic: peer does not speak the fdpass protocol")
	// ErrVersion: the peer speaks a version of the protocol this one does not.
	ErrVersion = errors.New("unixmsg: unsupported protocol version")
	// ErrMalformed: a frame or record does not follow the wire format.
	ErrMalformed = errors.New("unixmsg: malformed message")
	// ErrLimit: the peer announced or sent more than a limit allows.
	ErrLimit = errors.New("unixmsg: limit exceeded")
	// ErrMissingFDs: fewer descriptors arrived than a frame announced.
	ErrMissingFDs = errors.New("unixmsg: fewer descriptors than announced")
	// ErrUnexpectedFDs: descriptors arrived that no frame announced, or more
	// than announced.
	ErrUnexpectedFDs = errors.New("unixmsg: descriptors that were not announced")
	// ErrUnexpectedControl: a control message other than SCM_RIGHTS arrived.
	ErrUnexpectedControl = errors.New("unixmsg: unexpected control message")
)

func errf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}
