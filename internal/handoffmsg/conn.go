package handoffmsg

import (
	"context"

	"github.com/fdpass/fdpass/unixmsg"
)

// ControlLimits are the unixmsg limits of a connection that carries only
// control messages: no descriptor, a few KiB. A peer that sends more is
// refused without an allocation.
func ControlLimits() unixmsg.Limits {
	return unixmsg.Limits{
		MaxItems:         -1,
		MaxFDsPerMessage: -1,
		MaxBatchBytes:    2 * MaxLen,
		MaxFrame:         4 << 10,
	}
}

// Send sends m as the payload of a batch without descriptors, and waits
// for its acknowledgement unless c was made with unixmsg's NoAck.
func Send(c *unixmsg.Conn, m Message) error {
	b, err := Append(nil, m)
	if err != nil {
		return err
	}
	var batch unixmsg.Batch
	batch.SetPayload(b)
	return c.SendContext(context.Background(), &batch)
}

// Receive receives a batch that carries no descriptors and parses its
// control message. An ERROR message is returned as it is; see Message.Err.
func Receive(c *unixmsg.Conn) (Message, error) {
	b, err := c.Receive()
	if err != nil {
		return Message{}, err
	}
	defer b.Close()
	m, err := Parse(b.Payload())
	if err != nil {
		return Message{}, err
	}
	if b.Len() > 0 {
		return Message{}, errf(ErrMalformed, "%s with %d descriptors", m.Type, b.Len())
	}
	return m, nil
}

// SendError tells the peer why, as far as it listens; it never waits past
// the connection's deadline, which every caller has set. (A context would
// not do: unixmsg clears the deadline after a cancellation.) A reason
// longer than MaxReasonLen is cut.
func SendError(c *unixmsg.Conn, code ErrorCode, reason string) {
	if len(reason) > MaxReasonLen {
		reason = reason[:MaxReasonLen]
	}
	Send(c, Message{Type: MsgError, Code: code, Reason: reason})
}

// Err returns the *PeerError an ERROR message stands for, or nil for a
// message of another type.
func (m Message) Err() error {
	if m.Type != MsgError {
		return nil
	}
	return &PeerError{Code: m.Code, Reason: m.Reason}
}

// Expect returns nil if m is of type want; the peer's error if it is an
// ERROR; and otherwise an ErrMalformed error naming both types.
func (m Message) Expect(want MessageType) error {
	switch m.Type {
	case want:
		return nil
	case MsgError:
		return m.Err()
	}
	return errf(ErrMalformed, "%s where %s was due", m.Type, want)
}
