package handoffmsg

import (
	"encoding/binary"
	"fmt"
)

// Control message constants. A control message is the payload of a unixmsg
// batch on the handoff socket; every integer is little-endian:
//
//	offset size  field
//	0      4     magic "FDHO"
//	4      1     layout version, 1
//	5      1     type (MessageType)
//	6      2     body length N (at most MaxMessageLen-HeaderLen)
//	8      N     body, exactly N bytes, laid out by type:
//
//	HELLO (1), successor to predecessor, N = 8:
//	  0 u16 lowest protocol version the successor speaks (>= 1)
//	  2 u16 highest protocol version it speaks (>= lowest)
//	  4 u32 feature bits it supports
//	OFFER (2), predecessor to successor, the payload of the batch that
//	carries the descriptors, N = 24:
//	  0 u16 protocol version chosen (>= 1)
//	  2 u16 reserved, 0
//	  4 u32 feature bits both sides support
//	  8 u64 predecessor's generation (the first process is 1)
//	 16 u32 number of descriptors in the batch
//	 20 u32 milliseconds the predecessor waits for READY
//	READY (3), successor to predecessor, N = 4:
//	  0 u32 feature bits the successor asks for in the second phase
//	DONE (4), predecessor to successor, N = 4:
//	  0 u32 feature bits of the second phase that follows (0: none)
//	ERROR (5), either way, N = 4 + R:
//	  0 u16 code (ErrorCode, not 0)
//	  2 u16 reason length R (at most MaxReasonLen)
//	  4 R   reason, text for humans
//	CONNS (6), predecessor to successor, the payload of a batch of
//	migrating connections, N = 8:
//	  0 u32 number of connections in this batch
//	  4 u32 connections in the whole migration (>= this batch's)
//	ADOPTED (7), successor to predecessor, N = 4:
//	  0 u32 connections the successor holds (the whole migration's, or
//	        a LATE batch's)
//	LATE (8), predecessor to successor, after DONE, the payload of a
//	batch of connections that reached their boundary late, N = 4:
//	  0 u32 number of connections in this batch (>= 1)
//	CAPACITY (9), successor to predecessor, right after READY, with
//	FeatureCapacity agreed and a migration asked for, N = 4:
//	  0 u32 most connections the successor takes (>= 1)
//	UPGRADE (16), a requester to the running process, asking it to start
//	its successor and answer with the verdict, N = 4:
//	  0 u32 reserved, 0
//	UPGRADED (17), the running process to a requester, N = 4:
//	  0 u32 PID of the successor that took over
//
// Types 10 to 15 are reserved for the connection-migration phase. A message
// of any other type, a reserved field that is not zero, or a body of the
// wrong length is an error. Feature bits a side does not know are ignored
// (and kept by the codec). HELLO and ERROR keep layout version 1 forever, so
// that peers of any version can tell each other what they speak.
const (
	// Magic opens every control message.
	Magic = "FDHO"
	// Version is the layout version of control messages, and the
	// handoff protocol version this package speaks.
	Version = 1
	// HeaderLen is the length of a control message's header.
	HeaderLen = 8
	// MaxReasonLen bounds the reason text of an ERROR message.
	MaxReasonLen = 1024
	// MaxLen bounds a whole control message.
	MaxLen = HeaderLen + 4 + MaxReasonLen
)

// MessageType is the type byte of a control message.
type MessageType uint8

// Message types.
const (
	MsgHello MessageType = 1
	MsgOffer MessageType = 2
	MsgReady MessageType = 3
	MsgDone  MessageType = 4
	MsgError MessageType = 5
	// MsgConns and MsgAdopted make up the connection-migration phase,
	// between READY and DONE, when both sides asked for FeatureMigrate.
	MsgConns   MessageType = 6
	MsgAdopted MessageType = 7
	// MsgLate moves connections after DONE, with FeatureLateConns; the
	// successor answers each with MsgAdopted.
	MsgLate MessageType = 8
	// MsgCapacity, from the successor right after a READY that asks for
	// FeatureCapacity (announced by both sides), bounds the connections
	// it takes (Items, at least 1): the rest stay with the predecessor.
	MsgCapacity MessageType = 9
	// MsgUpgrade asks the running process to upgrade; it answers
	// MsgUpgraded, or ERROR with the reason it failed.
	MsgUpgrade  MessageType = 16
	MsgUpgraded MessageType = 17
)

var typeNames = [...]string{
	MsgHello:    "HELLO",
	MsgOffer:    "OFFER",
	MsgReady:    "READY",
	MsgDone:     "DONE",
	MsgError:    "ERROR",
	MsgConns:    "CONNS",
	MsgAdopted:  "ADOPTED",
	MsgLate:     "LATE",
	MsgCapacity: "CAPACITY",
	MsgUpgrade:  "UPGRADE",
	MsgUpgraded: "UPGRADED",
}

func (t MessageType) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return fmt.Sprintf("message(%d)", t)
}

// FeatureMigrate asks for, and announces, the connection-migration phase:
// after READY the predecessor sends its tracked connections in CONNS
// batches, the successor answers ADOPTED, and only then comes DONE.
const FeatureMigrate = 1 << 0

// FeatureStreamConns, with FeatureMigrate, lets the predecessor send CONNS
// batches while it still quiesces connections, before it knows how many
// will move: every batch but the last says T = ConnsMore, and the last
// says T, the number of connections in the whole migration. The successor
// announces it in HELLO, the predecessor keeps it in OFFER, and the
// successor asks for it in READY.
const FeatureStreamConns = 1 << 1

// FeatureLateConns, with FeatureStreamConns, lets the predecessor end the
// migration before DONE once the connections ready to move have moved, and
// send those that reach their boundary later after DONE, in LATE batches
// that the successor answers one by one with ADOPTED. Agreed as
// FeatureStreamConns is.
const FeatureLateConns = 1 << 2

// FeatureCapacity, with FeatureMigrate, has the successor say after READY
// how many connections it can take (MsgCapacity): no more move, and the
// others stay with the predecessor and drain, as when the successor does
// not migrate. A successor bounded by its descriptor limit takes what fits
// instead of failing the handoff on a batch it cannot receive. Announced in
// HELLO, kept in OFFER, asked for in READY (with FeatureMigrate) by a
// successor that then sends CAPACITY; not named in DONE.
const FeatureCapacity = 1 << 3

// ConnsMore is the T of a CONNS batch that more batches follow, in a
// migration with FeatureStreamConns.
const ConnsMore uint32 = 1<<32 - 1

// ErrorCode says why an ERROR message was sent.
type ErrorCode uint16

// Error codes. A peer may send codes this version does not name; they
// still parse.
const (
	CodeUnauthorized ErrorCode = 1 // the peer's credentials failed the check
	CodeVersion      ErrorCode = 2 // no protocol version in common
	CodeProtocol     ErrorCode = 3 // a malformed or unexpected message
	CodeTimeout      ErrorCode = 4 // the handoff took longer than allowed
	CodeAborted      ErrorCode = 5 // the sender gave up (closing, failed)
	CodeInternal     ErrorCode = 6 // the sender failed on its side
	CodeFailed       ErrorCode = 7 // the upgrade asked for failed
	CodeBusy         ErrorCode = 8 // another upgrade is in progress
)

var codeNames = [...]string{
	CodeUnauthorized: "unauthorized",
	CodeVersion:      "version",
	CodeProtocol:     "protocol",
	CodeTimeout:      "timeout",
	CodeAborted:      "aborted",
	CodeInternal:     "internal",
	CodeFailed:       "failed",
	CodeBusy:         "busy",
}

func (c ErrorCode) String() string {
	if int(c) < len(codeNames) && codeNames[c] != "" {
		return codeNames[c]
	}
	return fmt.Sprintf("code(%d)", c)
}

// Message is one control message. Only the fields of its Type are encoded;
// Parse leaves the others zero.
type Message struct {
	Type MessageType

	// HELLO: the range of protocol versions the successor speaks.
	MinVersion, MaxVersion uint16
	// OFFER: the protocol version chosen.
	Version uint16
	// HELLO, OFFER, READY, DONE: feature bits.
	Features uint32
	// OFFER: the predecessor's generation, the number of descriptors in
	// the batch, and how long the predecessor waits for READY.
	// CONNS: Items is the number of connections in the batch.
	// ADOPTED: Items is the number of connections adopted.
	// CAPACITY: Items is the most connections the successor takes.
	Generation    uint64
	Items         uint32
	TimeoutMillis uint32
	// CONNS: the number of connections in the whole migration, or
	// ConnsMore (FeatureStreamConns).
	Total uint32
	// UPGRADED: the successor's PID.
	PID uint32
	// ERROR: why.
	Code   ErrorCode
	Reason string
}

// bodyLen returns the fixed body length of t, or -1 for a type with a
// variable body, or -2 for an unknown type.
func bodyLen(t MessageType) int {
	switch t {
	case MsgHello:
		return 8
	case MsgOffer:
		return 24
	case MsgReady, MsgDone, MsgAdopted, MsgUpgrade, MsgUpgraded, MsgLate, MsgCapacity:
		return 4
	case MsgConns:
		return 8
	case MsgError:
		return -1
	}
	return -2
}

// Append appends the encoding of m to dst. It checks m as Parse would, so
// what it encodes parses.
func Append(dst []byte, m Message) ([]byte, error) {
	if err := checkMessage(&m); err != nil {
		return dst, err
	}
	n := bodyLen(m.Type)
	if n < 0 {
		n = 4 + len(m.Reason)
	}
	dst = append(dst, Magic...)
	dst = append(dst, Version, byte(m.Type))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(n))
	le := binary.LittleEndian
	switch m.Type {
	case MsgHello:
		dst = le.AppendUint16(dst, m.MinVersion)
		dst = le.AppendUint16(dst, m.MaxVersion)
		dst = le.AppendUint32(dst, m.Features)
	case MsgOffer:
		dst = le.AppendUint16(dst, m.Version)
		dst = le.AppendUint16(dst, 0)
		dst = le.AppendUint32(dst, m.Features)
		dst = le.AppendUint64(dst, m.Generation)
		dst = le.AppendUint32(dst, m.Items)
		dst = le.AppendUint32(dst, m.TimeoutMillis)
	case MsgReady, MsgDone:
		dst = le.AppendUint32(dst, m.Features)
	case MsgConns:
		dst = le.AppendUint32(dst, m.Items)
		dst = le.AppendUint32(dst, m.Total)
	case MsgAdopted, MsgLate, MsgCapacity:
		dst = le.AppendUint32(dst, m.Items)
	case MsgUpgrade:
		dst = le.AppendUint32(dst, 0)
	case MsgUpgraded:
		dst = le.AppendUint32(dst, m.PID)
	case MsgError:
		dst = le.AppendUint16(dst, uint16(m.Code))
		dst = le.AppendUint16(dst, uint16(len(m.Reason)))
		dst = append(dst, m.Reason...)
	}
	return dst, nil
}

func checkMessage(m *Message) error {
	switch m.Type {
	case MsgHello:
		if m.MinVersion == 0 || m.MinVersion > m.MaxVersion {
			return errf(ErrMalformed, "HELLO: version range %d-%d", m.MinVersion, m.MaxVersion)
		}
	case MsgOffer:
		if m.Version == 0 {
			return errf(ErrMalformed, "OFFER: version 0")
		}
	case MsgReady, MsgDone, MsgAdopted, MsgUpgrade:
	case MsgUpgraded:
		if m.PID == 0 {
			return errf(ErrMalformed, "UPGRADED: pid 0")
		}
	case MsgLate:
		if m.Items == 0 {
			return errf(ErrMalformed, "LATE: no connection")
		}
	case MsgCapacity:
		if m.Items == 0 {
			return errf(ErrMalformed, "CAPACITY: no connection")
		}
	case MsgConns:
		if m.Items > m.Total {
			return errf(ErrMalformed, "CONNS: %d connections in a batch of a migration of %d", m.Items, m.Total)
		}
	case MsgError:
		if m.Code == 0 {
			return errf(ErrMalformed, "ERROR: code 0")
		}
		if len(m.Reason) > MaxReasonLen {
			return errf(ErrMalformed, "ERROR: reason of %d bytes, limit %d", len(m.Reason), MaxReasonLen)
		}
	default:
		return fmt.Errorf("%w: %s", ErrUnknownMessage, m.Type)
	}
	return nil
}

// Parse parses one control message, which must fill b exactly. It never
// panics and allocates only the reason of an ERROR message. A message from
// another protocol is ErrBadMagic, from another layout version ErrVersion,
// of an unknown type ErrUnknownMessage, and anything else that breaks the
// format ErrMalformed.
func Parse(b []byte) (Message, error) {
	if len(b) >= len(Magic) && string(b[:len(Magic)]) != Magic {
		return Message{}, fmt.Errorf("%w: %q", ErrBadMagic, b[:len(Magic)])
	}
	if len(b) < HeaderLen {
		return Message{}, errf(ErrMalformed, "message of %d bytes, header is %d", len(b), HeaderLen)
	}
	if b[4] != Version {
		return Message{}, fmt.Errorf("%w: layout version %d, want %d", ErrVersion, b[4], Version)
	}
	m := Message{Type: MessageType(b[5])}
	n := int(binary.LittleEndian.Uint16(b[6:8]))
	body := b[HeaderLen:]
	if n != len(body) {
		return Message{}, errf(ErrMalformed, "%s: body length %d, %d bytes follow", m.Type, n, len(body))
	}
	want := bodyLen(m.Type)
	switch {
	case want == -2:
		return Message{}, fmt.Errorf("%w: %s", ErrUnknownMessage, m.Type)
	case want >= 0 && n != want:
		return Message{}, errf(ErrMalformed, "%s: body of %d bytes, want %d", m.Type, n, want)
	}
	le := binary.LittleEndian
	switch m.Type {
	case MsgHello:
		m.MinVersion = le.Uint16(body[0:2])
		m.MaxVersion = le.Uint16(body[2:4])
		m.Features = le.Uint32(body[4:8])
	case MsgOffer:
		m.Version = le.Uint16(body[0:2])
		if r := le.Uint16(body[2:4]); r != 0 {
			return Message{}, errf(ErrMalformed, "OFFER: reserved field %#x", r)
		}
		m.Features = le.Uint32(body[4:8])
		m.Generation = le.Uint64(body[8:16])
		m.Items = le.Uint32(body[16:20])
		m.TimeoutMillis = le.Uint32(body[20:24])
	case MsgReady, MsgDone:
		m.Features = le.Uint32(body[0:4])
	case MsgConns:
		m.Items = le.Uint32(body[0:4])
		m.Total = le.Uint32(body[4:8])
	case MsgAdopted:
		m.Items = le.Uint32(body[0:4])
	case MsgLate, MsgCapacity:
		m.Items = le.Uint32(body[0:4])
	case MsgUpgrade:
		if r := le.Uint32(body[0:4]); r != 0 {
			return Message{}, errf(ErrMalformed, "UPGRADE: reserved field %#x", r)
		}
	case MsgUpgraded:
		m.PID = le.Uint32(body[0:4])
	case MsgError:
		if n < 4 {
			return Message{}, errf(ErrMalformed, "ERROR: body of %d bytes, at least 4", n)
		}
		m.Code = ErrorCode(le.Uint16(body[0:2]))
		r := int(le.Uint16(body[2:4]))
		if r > MaxReasonLen {
			return Message{}, errf(ErrMalformed, "ERROR: reason of %d bytes, limit %d", r, MaxReasonLen)
		}
		if 4+r != n {
			return Message{}, errf(ErrMalformed, "ERROR: reason of %d bytes in a body of %d", r, n)
		}
		m.Reason = string(body[4:])
	}
	if err := checkMessage(&m); err != nil {
		return Message{}, err
	}
	return m, nil
}
