package wire

import (
	"encoding/binary"
	"strconv"
)

// Wire constants. unixmsg/PROTOCOL.md specifies the format.
const (
	// Magic opens every frame: "FDPS".
	Magic = "FDPS"
	// Version is the protocol version this package speaks.
	Version = 1
	// HeaderLen is the length of a frame header.
	HeaderLen = 16
	// HeadLen is the length of a HEAD frame's body.
	HeadLen = 24
	// RecordLen is the length of a record's fixed part.
	RecordLen = 10
	// MaxFDsPerMessage is the kernel's SCM_MAX_FD: the most descriptors one
	// sendmsg(2) can carry.
	MaxFDsPerMessage = 253
	// MaxReasonLen bounds the reason text of an ACK frame.
	MaxReasonLen = 1024
)

// FrameType is the type byte of a frame header.
type FrameType uint8

// Frame types.
const (
	FrameHead FrameType = 1 // opens a batch: item count, record bytes, flags
	FrameData FrameType = 2 // a chunk of the batch's records, with descriptors
	FrameAck  FrameType = 3 // the receiver's verdict on a batch
)

var frameTypeNames = [...]string{
	FrameHead: "HEAD",
	FrameData: "DATA",
	FrameAck:  "ACK",
}

func (t FrameType) String() string {
	if int(t) < len(frameTypeNames) && frameTypeNames[t] != "" {
		return frameTypeNames[t]
	}
	return "frame(" + strconv.Itoa(int(t)) + ")"
}

// HeadFlagAck in a HEAD frame asks the receiver to answer the batch with an
// ACK frame.
const HeadFlagAck = 1

// Status is the verdict carried by an ACK frame.
type Status uint32

// Statuses.
const (
	StatusOK         Status = 0
	StatusMalformed  Status = 1 // the batch broke the wire format
	StatusLimit      Status = 2 // the batch exceeded the receiver's limits
	StatusKind       Status = 3 // a descriptor was not of its declared kind
	StatusDescriptor Status = 4 // descriptors missing, unexpected or truncated
	StatusFailed     Status = 5 // anything else
)

var statusNames = [...]string{
	StatusOK:         "ok",
	StatusMalformed:  "malformed",
	StatusLimit:      "limit",
	StatusKind:       "kind",
	StatusDescriptor: "descriptor",
	StatusFailed:     "failed",
}

func (s Status) String() string {
	if uint64(s) < uint64(len(statusNames)) {
		return statusNames[s]
	}
	return "status(" + strconv.FormatUint(uint64(s), 10) + ")"
}

// Header is the fixed 16-byte start of every frame.
type Header struct {
	Type   FrameType
	NFDs   uint32 // descriptors sent with this frame
	Length uint32 // body bytes that follow the header
}

// AppendHeader appends the encoding of h to dst.
func AppendHeader(dst []byte, h Header) []byte {
	dst = append(dst, Magic...)
	dst = append(dst, Version, byte(h.Type), 0, 0)
	dst = binary.LittleEndian.AppendUint32(dst, h.NFDs)
	return binary.LittleEndian.AppendUint32(dst, h.Length)
}

// ParseHeader parses the header at the start of b, which must hold at least
// HeaderLen bytes, and checks it against lim: magic, version, known type,
// zero flags, body length and descriptor count within bounds.
func ParseHeader(b []byte, lim Limits) (Header, error) {
	lim = lim.WithDefaults()
	if len(b) < HeaderLen {
		return Header{}, errf(ErrMalformed, "frame of %d bytes is shorter than a header", len(b))
	}
	if string(b[:4]) != Magic {
		return Header{}, errf(ErrBadMagic, "got %q", b[:4])
	}
	if b[4] != Version {
		return Header{}, errf(ErrVersion, "peer speaks version %d, this side %d", b[4], Version)
	}
	h := Header{
		Type:   FrameType(b[5]),
		NFDs:   binary.LittleEndian.Uint32(b[8:12]),
		Length: binary.LittleEndian.Uint32(b[12:16]),
	}
	if h.Type < FrameHead || h.Type > FrameAck {
		return Header{}, errf(ErrMalformed, "unknown frame type %d", b[5])
	}
	if b[6] != 0 || b[7] != 0 {
		return Header{}, errf(ErrMalformed, "reserved header bytes are %#x %#x, want 0", b[6], b[7])
	}
	if h.Length > uint32(lim.MaxFrame) {
		return Header{}, errf(ErrLimit, "frame body of %d bytes, limit %d", h.Length, lim.MaxFrame)
	}
	if h.NFDs > uint32(max(lim.MaxFDsPerMessage, 0)) {
		return Header{}, errf(ErrLimit, "frame announces %d descriptors, limit %d", h.NFDs, max(lim.MaxFDsPerMessage, 0))
	}
	if h.Type != FrameData && h.NFDs != 0 {
		return Header{}, errf(ErrUnexpectedFDs, "%s frame announces %d descriptors", h.Type, h.NFDs)
	}
	return h, nil
}

// Head is the body of a HEAD frame.
type Head struct {
	Items   uint32 // items, and so descriptors, in the batch
	Flags   uint32 // HeadFlagAck, or 0
	Size    uint64 // bytes that follow in DATA frames: payload, then records
	Payload uint32 // bytes of batch payload at the start of the DATA bytes
}

// AppendHead appends the encoding of h to dst.
func AppendHead(dst []byte, h Head) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, h.Items)
	dst = binary.LittleEndian.AppendUint32(dst, h.Flags)
	dst = binary.LittleEndian.AppendUint64(dst, h.Size)
	dst = binary.LittleEndian.AppendUint32(dst, h.Payload)
	return binary.LittleEndian.AppendUint32(dst, 0)
}

// ParseHead parses a HEAD frame's body and checks it against lim before
// anything is allocated for the batch.
func ParseHead(b []byte, lim Limits) (Head, error) {
	lim = lim.WithDefaults()
	if len(b) != HeadLen {
		return Head{}, errf(ErrMalformed, "HEAD body of %d bytes, want %d", len(b), HeadLen)
	}
	h := Head{
		Items:   binary.LittleEndian.Uint32(b[0:4]),
		Flags:   binary.LittleEndian.Uint32(b[4:8]),
		Size:    binary.LittleEndian.Uint64(b[8:16]),
		Payload: binary.LittleEndian.Uint32(b[16:20]),
	}
	if h.Flags&^HeadFlagAck != 0 {
		return Head{}, errf(ErrMalformed, "unknown HEAD flags %#x", h.Flags)
	}
	if r := binary.LittleEndian.Uint32(b[20:24]); r != 0 {
		return Head{}, errf(ErrMalformed, "reserved HEAD field is %#x, want 0", r)
	}
	if h.Items > uint32(max(lim.MaxItems, 0)) {
		return Head{}, errf(ErrLimit, "batch of %d items, limit %d", h.Items, max(lim.MaxItems, 0))
	}
	if h.Payload > uint32(lim.MaxPayload) {
		return Head{}, errf(ErrLimit, "batch payload of %d bytes, limit %d", h.Payload, lim.MaxPayload)
	}
	if h.Size > uint64(lim.MaxBatchBytes) {
		return Head{}, errf(ErrLimit, "batch of %d bytes, limit %d", h.Size, lim.MaxBatchBytes)
	}
	if h.Size < uint64(h.Payload)+uint64(h.Items)*RecordLen {
		return Head{}, errf(ErrMalformed, "%d bytes cannot hold a payload of %d and %d items", h.Size, h.Payload, h.Items)
	}
	return h, nil
}

// Ack is the body of an ACK frame.
type Ack struct {
	Status Status
	Reason string
}

// AppendAck appends the encoding of a to dst; a reason longer than
// MaxReasonLen is cut.
func AppendAck(dst []byte, a Ack) []byte {
	r := a.Reason
	if len(r) > MaxReasonLen {
		r = r[:MaxReasonLen]
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(a.Status))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(r)))
	return append(dst, r...)
}

// ParseAck parses an ACK frame's body.
func ParseAck(b []byte) (Ack, error) {
	if len(b) < 6 {
		return Ack{}, errf(ErrMalformed, "ACK body of %d bytes", len(b))
	}
	n := int(binary.LittleEndian.Uint16(b[4:6]))
	if n > MaxReasonLen {
		return Ack{}, errf(ErrLimit, "ACK reason of %d bytes, limit %d", n, MaxReasonLen)
	}
	if len(b) != 6+n {
		return Ack{}, errf(ErrMalformed, "ACK body of %d bytes, reason says %d", len(b), 6+n)
	}
	return Ack{Status: Status(binary.LittleEndian.Uint32(b[0:4])), Reason: string(b[6:])}, nil
}
