package fuzz_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/fdpass/fdpass/unixmsg/wire"
)

// smallLimits are low enough for fuzzed inputs to reach and cross every
// limit; the seed corpora hold inputs exactly at each one and one past it.
var smallLimits = wire.Limits{
	MaxItems:         3,
	MaxNameLen:       8,
	MaxMetaEntries:   2,
	MaxMetaBytes:     16,
	MaxPayload:       16,
	MaxBatchBytes:    160,
	MaxFrame:         minFrame,
	MaxFDsPerMessage: 2,
}

// minFrame is the smallest MaxFrame the package accepts ("at least 2 KiB,
// so that a HEAD frame and an ACK with its longest reason always fit"); a
// smaller one reads as this.
const minFrame = 2 << 10

// filled returns lim with its zero fields set to their defaults and
// MaxFrame and MaxFDsPerMessage clamped, the way the package reads it.
func filled(lim wire.Limits) wire.Limits {
	d := wire.DefaultLimits()
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&lim.MaxItems, d.MaxItems)
	set(&lim.MaxNameLen, d.MaxNameLen)
	set(&lim.MaxMetaEntries, d.MaxMetaEntries)
	set(&lim.MaxMetaBytes, d.MaxMetaBytes)
	set(&lim.MaxPayload, d.MaxPayload)
	set(&lim.MaxBatchBytes, d.MaxBatchBytes)
	set(&lim.MaxFrame, d.MaxFrame)
	set(&lim.MaxFDsPerMessage, d.MaxFDsPerMessage)
	lim.MaxFDsPerMessage = min(lim.MaxFDsPerMessage, wire.MaxFDsPerMessage)
	lim.MaxFrame = min(max(lim.MaxFrame, minFrame), 16<<20)
	return lim
}

// peerSentinels are the errors a Decoder may return for what a peer sent.
var peerSentinels = []error{
	wire.ErrBadMagic,
	wire.ErrVersion,
	wire.ErrMalformed,
	wire.ErrLimit,
	wire.ErrMissingFDs,
	wire.ErrUnexpectedFDs,
}

// isAny reports whether err matches one of targets.
func isAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// checkItems returns an error unless items, with the batch payload, form a
// batch that lim allows: the invariant every decoded batch must keep.
func checkItems(items []wire.Item, payload []byte, lim wire.Limits) error {
	lim = filled(lim)
	if len(items) > lim.MaxItems {
		return fmt.Errorf("%d items, limit %d", len(items), lim.MaxItems)
	}
	if len(payload) > lim.MaxPayload {
		return fmt.Errorf("batch payload of %d bytes, limit %d", len(payload), lim.MaxPayload)
	}
	size := len(payload)
	for i, it := range items {
		if !it.Kind.Valid() {
			return fmt.Errorf("item %d: invalid kind %d", i, it.Kind)
		}
		if len(it.Name) > lim.MaxNameLen {
			return fmt.Errorf("item %d: name of %d bytes, limit %d", i, len(it.Name), lim.MaxNameLen)
		}
		if len(it.Meta) > lim.MaxMetaEntries {
			return fmt.Errorf("item %d: %d meta entries, limit %d", i, len(it.Meta), lim.MaxMetaEntries)
		}
		if len(it.Payload) > lim.MaxPayload {
			return fmt.Errorf("item %d: payload of %d bytes, limit %d", i, len(it.Payload), lim.MaxPayload)
		}
		mb := 0
		for j, e := range it.Meta {
			mb += len(e.Key) + len(e.Value)
			for _, p := range it.Meta[:j] {
				if p.Key == e.Key {
					return fmt.Errorf("item %d: duplicate meta key %q", i, e.Key)
				}
			}
		}
		if mb > lim.MaxMetaBytes {
			return fmt.Errorf("item %d: meta of %d bytes, limit %d", i, mb, lim.MaxMetaBytes)
		}
		size += wire.RecordLen + len(it.Name) + 4*len(it.Meta) + mb + len(it.Payload)
	}
	if size > lim.MaxBatchBytes {
		return fmt.Errorf("batch of %d bytes, limit %d", size, lim.MaxBatchBytes)
	}
	return nil
}

// itemsEqual compares items field by field; nil and empty slices are
// equal.
func itemsEqual(a, b []wire.Item) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d items, want %d", len(b), len(a))
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Kind != y.Kind || x.Name != y.Name || !bytes.Equal(x.Payload, y.Payload) || len(x.Meta) != len(y.Meta) {
			return fmt.Errorf("item %d: got %+v, want %+v", i, y, x)
		}
		for j := range x.Meta {
			if x.Meta[j] != y.Meta[j] {
				return fmt.Errorf("item %d meta %d: got %+v, want %+v", i, j, y.Meta[j], x.Meta[j])
			}
		}
	}
	return nil
}

// frame is one encoded frame as one message: what wire.EncodeBatch makes
// in two pieces, joined, or bytes built by hand.
type frame struct {
	Data []byte
	NFDs int
}

// encodeBatch is wire.EncodeBatch with each frame's pieces joined. It
// checks that every header piece is a whole header and nothing more.
func encodeBatch(items []wire.Item, payload []byte, flags uint32, lim wire.Limits) ([]frame, error) {
	_, frames, err := wire.EncodeBatch(nil, items, payload, flags, lim)
	if err != nil {
		return nil, err
	}
	out := make([]frame, len(frames))
	for i, fr := range frames {
		if len(fr.Header) != wire.HeaderLen {
			return nil, fmt.Errorf("frame %d: header piece of %d bytes, want %d", i, len(fr.Header), wire.HeaderLen)
		}
		out[i] = frame{Data: append(bytes.Clone(fr.Header), fr.Body...), NFDs: fr.NFDs}
	}
	return out, nil
}

// fakeFDs hands out descriptor numbers that are never open: the Decoder
// only counts and moves them, so any numbers will do, and unique ones let
// the targets check that each comes back exactly once.
type fakeFDs struct{ next int }

func (g *fakeFDs) take(n int) []int {
	if n == 0 {
		return nil
	}
	fds := make([]int, n)
	for i := range fds {
		fds[i] = 1000 + g.next
		g.next++
	}
	return fds
}

// lengths reads b as little-endian uint16 lengths; an odd last byte is
// ignored.
func lengths(b []byte) []int {
	n := make([]int, 0, len(b)/2)
	for i := 0; i+2 <= len(b); i += 2 {
		n = append(n, int(binary.LittleEndian.Uint16(b[i:])))
	}
	return n
}

// putLengths is the inverse of lengths.
func putLengths(n ...int) []byte {
	b := make([]byte, 0, 2*len(n))
	for _, v := range n {
		b = binary.LittleEndian.AppendUint16(b, uint16(v))
	}
	return b
}

// cut splits data at the given read lengths (each shortened to what is
// left); what remains after the last length is one more read.
func cut(data []byte, lens []int) [][]byte {
	var reads [][]byte
	for _, n := range lens {
		if len(data) == 0 {
			break
		}
		n = min(n, len(data))
		reads = append(reads, data[:n])
		data = data[n:]
	}
	if len(data) > 0 {
		reads = append(reads, data)
	}
	return reads
}

// reader hands out bytes of a fuzz input; past its end it returns zeros
// and empty slices, so any input builds something.
type reader struct{ b []byte }

func (r *reader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) bytes(n int) []byte {
	n = min(n, len(r.b))
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}
