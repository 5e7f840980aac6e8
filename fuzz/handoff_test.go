package fuzz_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/fdpass/fdpass/internal/handoffmsg"
)

// handoffSentinels are the errors graceful's message codec may return.
var handoffSentinels = []error{
	handoffmsg.ErrBadMagic,
	handoffmsg.ErrVersion,
	handoffmsg.ErrUnknownMessage,
	handoffmsg.ErrMalformed,
}

// FuzzHandoffMessage hands handoffmsg.Parse arbitrary bytes, and also
// reads them as the fields of a Message to encode.
//
// Invariants: no panic; every error wraps one of the codec's sentinels; a
// message that parses is no longer than MaxMessageLen, encodes with
// AppendMessage to exactly the bytes it was parsed from (there is one
// encoding of each message) and parses back equal; a built message that
// AppendMessage accepts parses back equal, and one it refuses is refused
// with ErrMalformed or ErrUnknownMessage, as ParseMessage would.
func FuzzHandoffMessage(f *testing.F) {
	for _, s := range handoffSeeds() {
		if s.add {
			f.Add(s.b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := handoffmsg.Parse(b)
		if err != nil {
			if !isAny(err, handoffSentinels...) {
				t.Fatalf("ParseMessage: error %q wraps no sentinel", err)
			}
		} else {
			if len(b) > handoffmsg.MaxLen {
				t.Fatalf("ParseMessage accepted %d bytes, MaxMessageLen %d", len(b), handoffmsg.MaxLen)
			}
			enc, err := handoffmsg.Append(nil, m)
			if err != nil {
				t.Fatalf("AppendMessage(ParseMessage(b)) = %v for %+v", err, m)
			}
			if !bytes.Equal(enc, b) {
				t.Fatalf("AppendMessage(ParseMessage(b)) = %q, want %q", enc, b)
			}
			if err := handoffParsesBack(m, enc); err != nil {
				t.Fatal(err)
			}
		}

		built := buildMessage(b)
		enc, err := handoffmsg.Append([]byte("prefix"), built)
		if err != nil {
			if !isAny(err, handoffmsg.ErrMalformed, handoffmsg.ErrUnknownMessage) {
				t.Fatalf("AppendMessage(%+v): error %q is neither ErrMalformed nor ErrUnknownMessage", built, err)
			}
			return
		}
		if !bytes.HasPrefix(enc, []byte("prefix")) {
			t.Fatalf("AppendMessage did not append: %q", enc)
		}
		if err := handoffParsesBack(built, enc[len("prefix"):]); err != nil {
			t.Fatal(err)
		}
	})
}

// handoffParsesBack checks that enc parses to m, but for the fields m's
// type does not carry, which parse as zero.
func handoffParsesBack(m handoffmsg.Message, enc []byte) error {
	back, err := handoffmsg.Parse(enc)
	if err != nil {
		return fmt.Errorf("ParseMessage(AppendMessage(%+v)) = %v", m, err)
	}
	if want := handoffFields(m); back != want {
		return fmt.Errorf("ParseMessage(AppendMessage(m)) = %+v, want %+v", back, want)
	}
	return nil
}

// handoffFields returns m with only the fields of its type.
func handoffFields(m handoffmsg.Message) handoffmsg.Message {
	k := handoffmsg.Message{Type: m.Type}
	switch m.Type {
	case handoffmsg.MsgHello:
		k.MinVersion, k.MaxVersion, k.Features = m.MinVersion, m.MaxVersion, m.Features
	case handoffmsg.MsgOffer:
		k.Version, k.Features, k.Generation, k.Items, k.TimeoutMillis = m.Version, m.Features, m.Generation, m.Items, m.TimeoutMillis
	case handoffmsg.MsgReady, handoffmsg.MsgDone:
		k.Features = m.Features
	case handoffmsg.MsgConns:
		k.Items, k.Total = m.Items, m.Total
	case handoffmsg.MsgAdopted, handoffmsg.MsgLate, handoffmsg.MsgCapacity:
		k.Items = m.Items
	case handoffmsg.MsgUpgraded:
		k.PID = m.PID
	case handoffmsg.MsgError:
		k.Code, k.Reason = m.Code, m.Reason
	}
	return k
}

// buildMessage reads a Message from b: the type (mod 24, so that 0, 10 to
// 15 and 18 to 23 are unknown), then every field whatever the type, the reason last with
// a two-byte length that may exceed MaxReasonLen (cut to what is left).
func buildMessage(b []byte) handoffmsg.Message {
	r := reader{b}
	var buf [8]byte
	le := func(n int) []byte {
		clear(buf[:])
		copy(buf[:], r.bytes(n))
		return buf[:]
	}
	u16 := func() uint16 { return binary.LittleEndian.Uint16(le(2)) }
	u32 := func() uint32 { return binary.LittleEndian.Uint32(le(4)) }
	u64 := func() uint64 { return binary.LittleEndian.Uint64(le(8)) }
	m := handoffmsg.Message{Type: handoffmsg.MessageType(r.byte() % 24)}
	m.MinVersion, m.MaxVersion, m.Version = u16(), u16(), u16()
	m.Features = u32()
	m.Generation = u64()
	m.Items, m.TimeoutMillis = u32(), u32()
	m.Code = handoffmsg.ErrorCode(u16())
	m.Total = u32()
	m.PID = u32()
	n := int(u16())
	if n > 0 {
		// Long reasons come from repeating what is left.
		rest := r.bytes(len(r.b))
		if len(rest) > 0 {
			m.Reason = string(bytes.Repeat(rest, n/len(rest)+1)[:n])
		}
	}
	return m
}

type handoffSeed struct {
	name string
	b    []byte
	add  bool
}

var _ = addSeeds(func() map[string][][]byte {
	m := map[string][][]byte{}
	for _, s := range handoffSeeds() {
		m["FuzzHandoffMessage/"+s.name] = [][]byte{s.b}
	}
	return m
})

func handoffSeeds() []handoffSeed {
	enc := func(m handoffmsg.Message) []byte {
		b, err := handoffmsg.Append(nil, m)
		if err != nil {
			panic(err)
		}
		return b
	}
	set := func(b []byte, off int, v ...byte) []byte {
		b = bytes.Clone(b)
		copy(b[off:], v)
		return b
	}
	hello := enc(handoffmsg.Message{Type: handoffmsg.MsgHello, MinVersion: 1, MaxVersion: 1})
	offer := enc(handoffmsg.Message{Type: handoffmsg.MsgOffer, Version: 1, Generation: 7, Items: 3, TimeoutMillis: 5000})
	ready := enc(handoffmsg.Message{Type: handoffmsg.MsgReady})
	done := enc(handoffmsg.Message{Type: handoffmsg.MsgDone})
	upgrade := enc(handoffmsg.Message{Type: handoffmsg.MsgUpgrade})
	upgraded := enc(handoffmsg.Message{Type: handoffmsg.MsgUpgraded, PID: 4242})
	errMsg := enc(handoffmsg.Message{Type: handoffmsg.MsgError, Code: handoffmsg.CodeVersion, Reason: "no version in common"})
	long := enc(handoffmsg.Message{Type: handoffmsg.MsgError, Code: handoffmsg.CodeInternal, Reason: pad(handoffmsg.MaxReasonLen)})
	tooLong := append(set(long, handoffmsg.HeaderLen-2, le16(4+handoffmsg.MaxReasonLen+1)...), 'x')
	tooLong = set(tooLong, handoffmsg.HeaderLen+2, le16(handoffmsg.MaxReasonLen+1)...)
	seeds := []handoffSeed{
		// Each message type.
		{name: "hello", b: hello, add: true},
		{name: "hello-range-features", b: enc(handoffmsg.Message{Type: handoffmsg.MsgHello, MinVersion: 1, MaxVersion: 9, Features: 0xffffffff})},
		{name: "offer", b: offer, add: true},
		{name: "ready", b: ready},
		{name: "ready-features", b: enc(handoffmsg.Message{Type: handoffmsg.MsgReady, Features: handoffmsg.FeatureMigrate})},
		{name: "done", b: done},
		{name: "error", b: errMsg, add: true},
		{name: "error-empty-reason", b: enc(handoffmsg.Message{Type: handoffmsg.MsgError, Code: 999})},
		// A requester's UPGRADE and the running process's UPGRADED.
		{name: "upgrade", b: upgrade, add: true},
		{name: "upgraded", b: upgraded, add: true},
		{name: "upgraded-pid-max", b: enc(handoffmsg.Message{Type: handoffmsg.MsgUpgraded, PID: 0xffffffff})},
		{name: "upgrade-reserved", b: set(upgrade, handoffmsg.HeaderLen, 1)},
		{name: "upgrade-no-body", b: set(upgrade[:handoffmsg.HeaderLen], 6, 0, 0)},
		{name: "upgraded-pid-0", b: set(upgraded, handoffmsg.HeaderLen, 0, 0, 0, 0)},
		{name: "upgraded-body-short", b: set(upgraded[:len(upgraded)-1], 6, 3, 0)},
		{name: "unknown-type-18", b: set(ready, 5, 18)},
		// The reason limit: at and one past.
		{name: "error-reason-at-limit", b: long},
		{name: "error-reason-past-limit", b: tooLong},
		// Malformed.
		{name: "empty", b: nil},
		{name: "short-header", b: hello[:5]},
		{name: "header-only", b: set(hello[:handoffmsg.HeaderLen], 6, 0, 0)},
		{name: "wrong-magic", b: set(hello, 0, 'F', 'D', 'P', 'S')},
		{name: "wrong-magic-short", b: []byte("GET")},
		{name: "version-0", b: set(hello, 4, 0)},
		{name: "version-2", b: set(hello, 4, 2)},
		{name: "unknown-type-0", b: set(ready, 5, 0)},
		{name: "unknown-type-6", b: set(ready, 5, 6)},
		{name: "unknown-type-15", b: set(ready, 5, 15)},
		{name: "unknown-type-255", b: set(ready, 5, 255)},
		{name: "body-length-short", b: set(offer, 6, 23, 0)},
		{name: "body-length-long", b: set(offer, 6, 25, 0)},
		{name: "body-truncated", b: offer[:len(offer)-1]},
		{name: "body-trailing-byte", b: append(bytes.Clone(ready), 0)},
		{name: "body-wrong-for-type", b: set(ready, 5, byte(handoffmsg.MsgHello))},
		{name: "offer-reserved", b: set(offer, handoffmsg.HeaderLen+2, 1)},
		{name: "offer-version-0", b: set(offer, handoffmsg.HeaderLen, 0, 0)},
		{name: "hello-min-0", b: set(hello, handoffmsg.HeaderLen, 0, 0)},
		{name: "hello-min-above-max", b: set(hello, handoffmsg.HeaderLen, 2, 0)},
		{name: "error-code-0", b: set(errMsg, handoffmsg.HeaderLen, 0, 0)},
		{name: "error-body-below-4", b: []byte{'F', 'D', 'H', 'O', 1, byte(handoffmsg.MsgError), 2, 0, 1, 0}},
		{name: "error-reason-length-mismatch", b: set(errMsg, handoffmsg.HeaderLen+2, 3, 0)},
		{name: "error-length-max", b: set(errMsg, 6, 0xff, 0xff)},
	}
	return seeds
}
