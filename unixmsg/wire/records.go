package wire

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"unsafe"

	"github.com/fdpass/fdpass/internal/prefault"
	"github.com/fdpass/fdpass/kinds"
)

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
	if len(items) > max(lim.MaxItems, 0) {
		return dst, errf(ErrLimit, "batch of %d items, limit %d", len(items), max(lim.MaxItems, 0))
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
// payloads all point into one copy of it. (The Decoder parses the records
// of a batch in place; ParseRecords is AppendRecords' other half, for
// other implementations and the fuzz targets.)
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
	if n < 0 || n > max(lim.MaxItems, 0) {
		return nil, errf(ErrLimit, "batch of %d items, limit %d", n, max(lim.MaxItems, 0))
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
