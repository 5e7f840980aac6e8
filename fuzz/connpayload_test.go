package fuzz_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"unsafe"

	"github.com/fdpass/fdpass/internal/handoffmsg"
)

// FuzzConnPayload hands handoffmsg.ParseConnPayload arbitrary bytes, as the
// payload of a CONNS item from a predecessor, and builds payloads from the
// input with AppendConnPayload.
//
// Invariants: no panic, no allocation; an error matches ErrMalformed and
// comes exactly when the payload is shorter than 4 bytes or announces more
// state than follows; what parses is the state and the unread bytes as
// laid out (HANDOFF.md), both inside the input, the state capped so that
// an append to it cannot overwrite the unread bytes, and it encodes back
// to the input; and what AppendConnPayload builds, after any prefix, is
// ConnPayloadLen long and parses back to its parts.
func FuzzConnPayload(f *testing.F) {
	for _, s := range connPayloadSeeds() {
		if s.add {
			f.Add(s.b, s.parts)
		}
	}
	f.Fuzz(func(t *testing.T, b, parts []byte) {
		state, buffered, err := handoffmsg.ParseConnPayload(b)
		short := len(b) < 4 || uint64(binary.LittleEndian.Uint32(b)) > uint64(len(b)-4)
		if err != nil {
			if !errors.Is(err, handoffmsg.ErrMalformed) {
				t.Fatalf("ParseConnPayload(%q): error %q does not match ErrMalformed", b, err)
			}
			if !short {
				t.Fatalf("ParseConnPayload(%q) refused a well-formed payload: %v", b, err)
			}
		} else {
			if short {
				t.Fatalf("ParseConnPayload(%q) accepted a payload that is too short: state %q", b, state)
			}
			s := int(binary.LittleEndian.Uint32(b))
			if !bytes.Equal(state, b[4:4+s]) || !bytes.Equal(buffered, b[4+s:]) {
				t.Fatalf("ParseConnPayload(%q) = %q, %q", b, state, buffered)
			}
			if cap(state) != len(state) {
				t.Fatalf("state of %d bytes has capacity %d: an append overwrites the unread bytes", len(state), cap(state))
			}
			if !inside(state, b) || !inside(buffered, b) {
				t.Fatalf("ParseConnPayload(%q) returned memory outside its input", b)
			}
			if back := handoffmsg.AppendConnPayload(nil, state, buffered); !bytes.Equal(back, b) {
				t.Fatalf("ParseConnPayload(%q), appended again: %q", b, back)
			}
			if n := handoffmsg.ConnPayloadLen(state, buffered); n != len(b) {
				t.Fatalf("ConnPayloadLen = %d, payload of %d bytes", n, len(b))
			}
			if a := testing.AllocsPerRun(1, func() { handoffmsg.ParseConnPayload(b) }); a != 0 {
				t.Fatalf("ParseConnPayload allocates (%v times)", a)
			}
		}

		// Build: state is b, the unread bytes parts cut in three at the
		// lengths its first two bytes give.
		var cuts [3][]byte
		rest := parts
		for i := range 2 {
			n := 0
			if i < len(parts) {
				n = min(int(parts[i]), len(rest))
			}
			cuts[i], rest = rest[:n], rest[n:]
		}
		cuts[2] = rest
		enc := handoffmsg.AppendConnPayload([]byte("prefix"), b, cuts[:]...)
		if !bytes.HasPrefix(enc, []byte("prefix")) {
			t.Fatalf("AppendConnPayload lost its dst: %q", enc)
		}
		enc = enc[len("prefix"):]
		if n := handoffmsg.ConnPayloadLen(b, cuts[:]...); n != len(enc) {
			t.Fatalf("ConnPayloadLen = %d, AppendConnPayload made %d bytes", n, len(enc))
		}
		gotState, gotBuffered, err := handoffmsg.ParseConnPayload(enc)
		if err != nil {
			t.Fatalf("AppendConnPayload(%q, %q) = %q, which does not parse: %v", b, parts, enc, err)
		}
		if !bytes.Equal(gotState, b) || !bytes.Equal(gotBuffered, parts) {
			t.Fatalf("AppendConnPayload(%q, %q) parses as %q, %q", b, parts, gotState, gotBuffered)
		}
	})
}

// inside reports whether p lies within b's memory (an empty p anywhere).
func inside(p, b []byte) bool {
	if len(p) == 0 {
		return true
	}
	if len(b) == 0 {
		return false
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	at := uintptr(unsafe.Pointer(unsafe.SliceData(p)))
	return at >= start && at+uintptr(len(p)) <= start+uintptr(len(b))
}

type connPayloadSeed struct {
	name     string
	b, parts []byte
	add      bool
}

var _ = addSeeds(func() map[string][][]byte {
	m := map[string][][]byte{}
	for _, s := range connPayloadSeeds() {
		m["FuzzConnPayload/"+s.name] = [][]byte{s.b, s.parts}
	}
	return m
})

func connPayloadSeeds() []connPayloadSeed {
	p := func(state string, buffered ...string) []byte {
		var bs [][]byte
		for _, b := range buffered {
			bs = append(bs, []byte(b))
		}
		return handoffmsg.AppendConnPayload(nil, []byte(state), bs...)
	}
	withLen := func(b []byte, s uint32) []byte {
		b = bytes.Clone(b)
		binary.LittleEndian.PutUint32(b, s)
		return b
	}
	return []connPayloadSeed{
		{name: "state-and-unread", b: p("net/http", "GET / HTTP/1.1\r\n"), parts: []byte{3, 5, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'}, add: true},
		{name: "state-only", b: p("42 ada"), add: true},
		{name: "unread-only", b: p("", "NICK ada\n")},
		{name: "empty-state-and-unread", b: p("")},
		{name: "empty", b: nil},
		{name: "length-only-short", b: []byte{1, 0, 0}},
		{name: "state-length-one-past", b: withLen(p("abc"), 4)},
		{name: "state-length-at-end", b: withLen(p("abc", "de"), 5)},
		{name: "state-length-max", b: withLen(p("abc"), 0xffffffff)},
		{name: "state-length-sign-bit", b: withLen(p("abc"), 0x80000000)},
	}
}
