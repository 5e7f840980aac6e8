package wire

import "math"

// Limits bound what a receiver accepts. A zero field means its default. A
// sender checks its batches against its own limits before sending anything.
type Limits struct {
	// MaxItems bounds the items (and so descriptors) in one batch.
	// Default 65536. A negative value allows none: batches carry a
	// payload only, and a receiver keeps no room for descriptors.
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
	// size of the control buffer. Default and maximum 253 (SCM_MAX_FD). A
	// negative value allows none, as a negative MaxItems does.
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
// MaxFDsPerMessage descriptors of control data per read. Limits that allow
// no descriptor keep -1 in both fields.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	none := l.MaxItems < 0 || l.MaxFDsPerMessage < 0
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
	if none {
		// Kept negative, so that the limits read the same however
		// often they are filled.
		l.MaxItems, l.MaxFDsPerMessage = -1, -1
	}
	return l
}
