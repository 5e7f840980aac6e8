package wire

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unsafe"

	"github.com/fdpass/fdpass/internal/prefault"
	"github.com/fdpass/fdpass/kinds"
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

// Limits bound what a receiver accepts. A zero field means its default. A
// sender checks its batches against its own limits before sending anything.
type Limits struct {
	// MaxItems bounds the items (and so descriptors) in one batch.
	// Default 65536.
	MaxItems int
	// MaxNameLen bounds an item's name, in bytes. Default 1024.
	MaxNameLen int
	// MaxMetaEntries bounds the meta entries of one item. Default 64.
	MaxMetaEntries int
	// MaxMetaBytes bounds the sum of the lengths of one item's meta keys and
	// values. Default 16 KiB.
	MaxMetaBytes int
	// MaxPayload bounds one item's payload. Default 1 MiB.
	MaxPayload int
	// MaxBatchBytes bounds the bytes of one batch's DATA frames: its
	// payload and records (HEAD size). Default 64 MiB.
	MaxBatchBytes int
	// MaxFrame bounds the body of one frame; senders cut records into
	// frames of at most this size. Default 64 KiB; at least 2 KiB, so
	// that a HEAD frame and an ACK with its longest reason always fit. On
	// SOCK_SEQPACKET the socket's send buffer must hold a whole frame.
	MaxFrame int
	// MaxFDsPerMessage bounds the descriptors in one message, and so the
	// size of the control buffer. Default and maximum 253 (SCM_MAX_FD).
	MaxFDsPerMessage int
}

// DefaultLimits returns the limits used for zero fields.
func DefaultLimits() Limits {
	return Limits{
		MaxItems:         1 << 16,
		MaxNameLen:       1024,
		MaxMetaEntries:   64,
		MaxMetaBytes:     16 << 10,
		MaxPayload:       1 << 20,
		MaxBatchBytes:    64 << 20,
		MaxFrame:         64 << 10,
		MaxFDsPerMessage: MaxFDsPerMessage,
	}
}

// hardMaxFrame keeps a frame length representable and its buffer sane;
// minFrame leaves room for every frame that is not DATA.
const (
	hardMaxFrame = 16 << 20
	minFrame     = 2 << 10
)

// WithDefaults returns l with its zero fields set to their defaults and
// every field clamped to what the wire can carry: the limits as the
// encoders, the parsers and the Decoder read them. A receiver sizes its
// buffers from them: HeaderLen+MaxFrame bytes of data and room for
// MaxFDsPerMessage descriptors of control data per read.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	fill := func(v *int, def, max int) {
		if *v <= 0 {
			*v = def
		}
		if *v > max {
			*v = max
		}
	}
	fill(&l.MaxItems, d.MaxItems, math.MaxInt32)
	fill(&l.MaxNameLen, d.MaxNameLen, math.MaxUint16)
	fill(&l.MaxMetaEntries, d.MaxMetaEntries, math.MaxUint16)
	fill(&l.MaxMetaBytes, d.MaxMetaBytes, math.MaxInt32)
	fill(&l.MaxPayload, d.MaxPayload, math.MaxInt32)
	fill(&l.MaxBatchBytes, d.MaxBatchBytes, math.MaxInt32)
	fill(&l.MaxFrame, d.MaxFrame, hardMaxFrame)
	l.MaxFrame = max(l.MaxFrame, minFrame)
	fill(&l.MaxFDsPerMessage, d.MaxFDsPerMessage, MaxFDsPerMessage)
	return l
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
	if h.NFDs > uint32(lim.MaxFDsPerMessage) {
		return Header{}, errf(ErrLimit, "frame announces %d descriptors, limit %d", h.NFDs, lim.MaxFDsPerMessage)
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
	if h.Items > uint32(lim.MaxItems) {
		return Head{}, errf(ErrLimit, "batch of %d items, limit %d", h.Items, lim.MaxItems)
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

// Item is what travels with one descriptor: its kind, a name, meta and an
// optional payload (application state, such as bytes already read from a
// connection).
type Item struct {
	Kind    kinds.Kind
	Name    string
	Meta    Meta
	Payload []byte
}

// KV is one meta entry.
type KV struct {
	Key, Value string
}

// Meta is an ordered list of string key/value pairs with unique keys.
type Meta []KV

// Get returns the value for key and whether it is present.
func (m Meta) Get(key string) (string, bool) {
	for _, e := range m {
		if e.Key == key {
			return e.Value, true
		}
	}
	return "", false
}

// Value returns the value for key, or "".
func (m Meta) Value(key string) string {
	v, _ := m.Get(key)
	return v
}

// checkItem checks one item against the limits; it is shared by the encoder
// (so a sender fails before sending) and the parser.
func checkItem(it *Item, lim *Limits) error {
	if !it.Kind.Valid() {
		return errf(ErrMalformed, "invalid kind %d", uint8(it.Kind))
	}
	if len(it.Name) > lim.MaxNameLen {
		return errf(ErrLimit, "name of %d bytes, limit %d", len(it.Name), lim.MaxNameLen)
	}
	if len(it.Meta) > lim.MaxMetaEntries {
		return errf(ErrLimit, "%d meta entries, limit %d", len(it.Meta), lim.MaxMetaEntries)
	}
	if len(it.Payload) > lim.MaxPayload {
		return errf(ErrLimit, "payload of %d bytes, limit %d", len(it.Payload), lim.MaxPayload)
	}
	size := 0
	for i, e := range it.Meta {
		if len(e.Key) > math.MaxUint16 || len(e.Value) > math.MaxUint16 {
			return errf(ErrLimit, "meta entry %q longer than 65535 bytes", e.Key)
		}
		size += len(e.Key) + len(e.Value)
		for _, p := range it.Meta[:i] {
			if p.Key == e.Key {
				return errf(ErrMalformed, "duplicate meta key %q", e.Key)
			}
		}
	}
	if size > lim.MaxMetaBytes {
		return errf(ErrLimit, "meta of %d bytes, limit %d", size, lim.MaxMetaBytes)
	}
	return nil
}

// recordsLen returns the encoded length of the records of items.
func recordsLen(items []Item) int {
	n := 0
	for i := range items {
		it := &items[i]
		n += RecordLen + len(it.Name) + len(it.Payload) + 4*len(it.Meta)
		for _, e := range it.Meta {
			n += len(e.Key) + len(e.Value)
		}
	}
	return n
}

// AppendRecords appends the records of items to dst, checking each item
// against lim.
func AppendRecords(dst []byte, items []Item, lim Limits) ([]byte, error) {
	lim = lim.WithDefaults()
	if len(items) > lim.MaxItems {
		return dst, errf(ErrLimit, "batch of %d items, limit %d", len(items), lim.MaxItems)
	}
	start := len(dst)
	dst = slices.Grow(dst, recordsLen(items))
	for i := range items {
		it := &items[i]
		if err := checkItem(it, &lim); err != nil {
			return dst, fmt.Errorf("item %d (%q): %w", i, it.Name, err)
		}
		dst = append(dst, byte(it.Kind), 0)
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(it.Name)))
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(it.Meta)))
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(it.Payload)))
		dst = append(dst, it.Name...)
		for _, e := range it.Meta {
			dst = binary.LittleEndian.AppendUint16(dst, uint16(len(e.Key)))
			dst = binary.LittleEndian.AppendUint16(dst, uint16(len(e.Value)))
			dst = append(dst, e.Key...)
			dst = append(dst, e.Value...)
		}
		dst = append(dst, it.Payload...)
	}
	if len(dst)-start > lim.MaxBatchBytes {
		return dst, errf(ErrLimit, "batch of %d record bytes, limit %d", len(dst)-start, lim.MaxBatchBytes)
	}
	return dst, nil
}

// ParseRecords parses exactly n records that fill src, checking each against
// lim. Nothing returned refers to src: the items' names, keys, values and
// payloads all point into one copy of it.
func ParseRecords(src []byte, n int, lim Limits) ([]Item, error) {
	return parseRecords(bytes.Clone(src), n, lim)
}

// parseRecords is ParseRecords on a buffer that it may keep: the items'
// strings and payloads point into src, which nobody may write to after
// (a payload's capacity ends where it does, so appending to one copies
// it). Copying what a batch carries, once for the strings and again for
// the payloads, was the largest cost of receiving big payloads: memory
// touched for the first time costs a page fault per 4 KiB, several
// microseconds each on virtual machines.
func parseRecords(src []byte, n int, lim Limits) ([]Item, error) {
	lim = lim.WithDefaults()
	if n < 0 || n > lim.MaxItems {
		return nil, errf(ErrLimit, "batch of %d items, limit %d", n, lim.MaxItems)
	}
	if len(src) > lim.MaxBatchBytes {
		return nil, errf(ErrLimit, "batch of %d record bytes, limit %d", len(src), lim.MaxBatchBytes)
	}
	if len(src) < n*RecordLen {
		return nil, errf(ErrMalformed, "%d record bytes cannot hold %d items", len(src), n)
	}
	var str string
	if len(src) > 0 {
		str = unsafe.String(&src[0], len(src))
	}
	items := make([]Item, n)
	// Fresh memory, in a batch of thousands: populated in one call.
	prefault.Slice(items)
	var pool Meta
	off := 0
	for i := range items {
		it := &items[i]
		if len(src)-off < RecordLen {
			return nil, errf(ErrMalformed, "item %d: record cut short", i)
		}
		it.Kind = kinds.Kind(src[off])
		if src[off+1] != 0 {
			return nil, errf(ErrMalformed, "item %d: reserved byte is %#x", i, src[off+1])
		}
		nameLen := int(binary.LittleEndian.Uint16(src[off+2:]))
		metaN := int(binary.LittleEndian.Uint16(src[off+4:]))
		payLen := int(binary.LittleEndian.Uint32(src[off+6:]))
		off += RecordLen
		if nameLen > lim.MaxNameLen {
			return nil, errf(ErrLimit, "item %d: name of %d bytes, limit %d", i, nameLen, lim.MaxNameLen)
		}
		if metaN > lim.MaxMetaEntries {
			return nil, errf(ErrLimit, "item %d: %d meta entries, limit %d", i, metaN, lim.MaxMetaEntries)
		}
		if payLen > lim.MaxPayload {
			return nil, errf(ErrLimit, "item %d: payload of %d bytes, limit %d", i, payLen, lim.MaxPayload)
		}
		if len(src)-off < nameLen {
			return nil, errf(ErrMalformed, "item %d: name cut short", i)
		}
		it.Name = str[off : off+nameLen]
		off += nameLen
		if metaN > 0 {
			// One backing array serves every item's meta. Its size is
			// bounded by the input: an entry takes at least 4 bytes.
			if cap(pool)-len(pool) < metaN {
				c := (len(src) - off) / 4
				if want := metaN * (n - i); c > want {
					c = want
				}
				if c < metaN {
					return nil, errf(ErrMalformed, "item %d: meta entries cut short", i)
				}
				pool = make(Meta, 0, c)
				prefault.Slice(pool)
			}
			it.Meta = pool[len(pool) : len(pool)+metaN : len(pool)+metaN]
			pool = pool[:len(pool)+metaN]
			size := 0
			for j := range it.Meta {
				if len(src)-off < 4 {
					return nil, errf(ErrMalformed, "item %d: meta entry %d cut short", i, j)
				}
				kl := int(binary.LittleEndian.Uint16(src[off:]))
				vl := int(binary.LittleEndian.Uint16(src[off+2:]))
				off += 4
				size += kl + vl
				if size > lim.MaxMetaBytes {
					return nil, errf(ErrLimit, "item %d: meta of more than %d bytes", i, lim.MaxMetaBytes)
				}
				if len(src)-off < kl+vl {
					return nil, errf(ErrMalformed, "item %d: meta entry %d cut short", i, j)
				}
				k := str[off : off+kl]
				for _, p := range it.Meta[:j] {
					if p.Key == k {
						return nil, errf(ErrMalformed, "item %d: duplicate meta key %q", i, k)
					}
				}
				it.Meta[j] = KV{Key: k, Value: str[off+kl : off+kl+vl]}
				off += kl + vl
			}
		}
		if len(src)-off < payLen {
			return nil, errf(ErrMalformed, "item %d: payload cut short", i)
		}
		if payLen > 0 {
			it.Payload = src[off : off+payLen : off+payLen]
		}
		off += payLen
		if !it.Kind.Valid() {
			return nil, errf(ErrMalformed, "item %d: invalid kind %d", i, uint8(it.Kind))
		}
	}
	if off != len(src) {
		return nil, errf(ErrMalformed, "%d bytes after the last record", len(src)-off)
	}
	return items, nil
}
