package handoffmsg_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/fdpass/fdpass/internal/handoffmsg"
)

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range []handoffmsg.Message{
		{Type: handoffmsg.MsgHello, MinVersion: 1, MaxVersion: 1},
		{Type: handoffmsg.MsgHello, MinVersion: 1, MaxVersion: 7, Features: 0xdeadbeef},
		{Type: handoffmsg.MsgOffer, Version: 1, Features: handoffmsg.FeatureMigrate, Generation: 1<<63 + 5, Items: 1001, TimeoutMillis: 30000},
		{Type: handoffmsg.MsgReady},
		{Type: handoffmsg.MsgReady, Features: handoffmsg.FeatureMigrate},
		{Type: handoffmsg.MsgDone, Features: 3},
		{Type: handoffmsg.MsgConns, Items: 2048, Total: 10000},
		{Type: handoffmsg.MsgConns},
		{Type: handoffmsg.MsgAdopted, Items: 10000},
		{Type: handoffmsg.MsgLate, Items: 3},
		{Type: handoffmsg.MsgCapacity, Items: 900},
		{Type: handoffmsg.MsgError, Code: handoffmsg.CodeTimeout},
		{Type: handoffmsg.MsgError, Code: 999, Reason: strings.Repeat("é", handoffmsg.MaxReasonLen/2)},
	} {
		t.Run(m.Type.String(), func(t *testing.T) {
			b, err := handoffmsg.Append([]byte("prefix"), m)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatal("AppendMessage lost dst")
			}
			got, err := handoffmsg.Parse(b[len("prefix"):])
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m, got) {
				t.Errorf("round trip:\nwant %+v\ngot  %+v", m, got)
			}
		})
	}
}

func TestMessageWire(t *testing.T) {
	// The layout documented in message.go, byte by byte.
	b, err := handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgError, Code: handoffmsg.CodeVersion, Reason: "no"})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("FDHO\x01\x05\x06\x00\x02\x00\x02\x00no")
	if !bytes.Equal(b, want) {
		t.Errorf("ERROR encodes as %q, want %q", b, want)
	}
	b, _ = handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgHello, MinVersion: 1, MaxVersion: 2, Features: 1})
	want = []byte("FDHO\x01\x01\x08\x00\x01\x00\x02\x00\x01\x00\x00\x00")
	if !bytes.Equal(b, want) {
		t.Errorf("HELLO encodes as %q, want %q", b, want)
	}
	b, _ = handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgConns, Items: 2, Total: 0x0103})
	want = []byte("FDHO\x01\x06\x08\x00\x02\x00\x00\x00\x03\x01\x00\x00")
	if !bytes.Equal(b, want) {
		t.Errorf("CONNS encodes as %q, want %q", b, want)
	}
	b, _ = handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgAdopted, Items: 5})
	want = []byte("FDHO\x01\x07\x04\x00\x05\x00\x00\x00")
	if !bytes.Equal(b, want) {
		t.Errorf("ADOPTED encodes as %q, want %q", b, want)
	}
}

func TestParseMessageErrors(t *testing.T) {
	hello, _ := handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgHello, MinVersion: 1, MaxVersion: 1})
	offer, _ := handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgOffer, Version: 1})
	errMsg, _ := handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgError, Code: 1, Reason: "abc"})
	mod := func(b []byte, f func(b []byte) []byte) []byte { return f(bytes.Clone(b)) }
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, handoffmsg.ErrMalformed},
		{"short magic", []byte("FD"), handoffmsg.ErrMalformed},
		{"magic only", []byte("FDHO"), handoffmsg.ErrMalformed},
		{"bad magic", []byte("FDPS\x01\x01\x00\x00"), handoffmsg.ErrBadMagic},
		{"bad magic short", []byte("HTTP/"), handoffmsg.ErrBadMagic},
		{"version", mod(hello, func(b []byte) []byte { b[4] = 2; return b }), handoffmsg.ErrVersion},
		{"unknown type", []byte("FDHO\x01\x12\x00\x00"), handoffmsg.ErrUnknownMessage},
		{"reserved type", []byte("FDHO\x01\x0a\x00\x00"), handoffmsg.ErrUnknownMessage},
		{"CAPACITY of none", []byte("FDHO\x01\x09\x04\x00\x00\x00\x00\x00"), handoffmsg.ErrMalformed},
		{"late without connections", []byte("FDHO\x01\x08\x04\x00\x00\x00\x00\x00"), handoffmsg.ErrMalformed},
		{"late short", []byte("FDHO\x01\x08\x00\x00"), handoffmsg.ErrMalformed},
		{"reserved type 15", []byte("FDHO\x01\x0f\x00\x00"), handoffmsg.ErrUnknownMessage},
		{"conns short", []byte("FDHO\x01\x06\x04\x00\x00\x00\x00\x00"), handoffmsg.ErrMalformed},
		{"conns batch > total", []byte("FDHO\x01\x06\x08\x00\x02\x00\x00\x00\x01\x00\x00\x00"), handoffmsg.ErrMalformed},
		{"adopted long", []byte("FDHO\x01\x07\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00"), handoffmsg.ErrMalformed},
		{"type zero", []byte("FDHO\x01\x00\x00\x00"), handoffmsg.ErrUnknownMessage},
		{"truncated body", hello[:len(hello)-1], handoffmsg.ErrMalformed},
		{"trailing byte", append(bytes.Clone(hello), 0), handoffmsg.ErrMalformed},
		{"wrong body length", []byte("FDHO\x01\x03\x02\x00\x00\x00"), handoffmsg.ErrMalformed},
		{"hello min zero", mod(hello, func(b []byte) []byte { b[8] = 0; return b }), handoffmsg.ErrMalformed},
		{"hello min > max", mod(hello, func(b []byte) []byte { b[8] = 3; return b }), handoffmsg.ErrMalformed},
		{"offer version zero", mod(offer, func(b []byte) []byte { b[8] = 0; return b }), handoffmsg.ErrMalformed},
		{"offer reserved", mod(offer, func(b []byte) []byte { b[10] = 1; return b }), handoffmsg.ErrMalformed},
		{"error code zero", mod(errMsg, func(b []byte) []byte { b[8] = 0; return b }), handoffmsg.ErrMalformed},
		{"error reason length", mod(errMsg, func(b []byte) []byte { b[10] = 9; return b }), handoffmsg.ErrMalformed},
		{"error short body", []byte("FDHO\x01\x05\x02\x00\x01\x00"), handoffmsg.ErrMalformed},
		{"error reason too long", append([]byte("FDHO\x01\x05\x05\x04\x01\x00\x01\x04"), make([]byte, 1025)...), handoffmsg.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := handoffmsg.Parse(tc.b)
			if !errors.Is(err, tc.want) {
				t.Errorf("Parse(%q) = %+v, %v; want %v", tc.b, m, err, tc.want)
			}
		})
	}
}

func TestAppendMessageErrors(t *testing.T) {
	for _, tc := range []struct {
		m    handoffmsg.Message
		want error
	}{
		{handoffmsg.Message{}, handoffmsg.ErrUnknownMessage},
		{handoffmsg.Message{Type: 10}, handoffmsg.ErrUnknownMessage},
		{handoffmsg.Message{Type: handoffmsg.MsgLate}, handoffmsg.ErrMalformed},
		{handoffmsg.Message{Type: handoffmsg.MsgCapacity}, handoffmsg.ErrMalformed},
		{handoffmsg.Message{Type: handoffmsg.MsgConns, Items: 3, Total: 2}, handoffmsg.ErrMalformed},
		{handoffmsg.Message{Type: handoffmsg.MsgHello}, handoffmsg.ErrMalformed},
		{handoffmsg.Message{Type: handoffmsg.MsgOffer}, handoffmsg.ErrMalformed},
		{handoffmsg.Message{Type: handoffmsg.MsgError}, handoffmsg.ErrMalformed},
		{handoffmsg.Message{Type: handoffmsg.MsgError, Code: 1, Reason: strings.Repeat("x", handoffmsg.MaxReasonLen+1)}, handoffmsg.ErrMalformed},
	} {
		if _, err := handoffmsg.Append(nil, tc.m); !errors.Is(err, tc.want) {
			t.Errorf("Append(%+v): %v, want %v", tc.m, err, tc.want)
		}
	}
}

// TestParseMessageNoPanic feeds mutations of valid messages; ParseMessage
// must return, and whatever parses must encode back to the same bytes.
func TestParseMessageNoPanic(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var seeds [][]byte
	for _, m := range []handoffmsg.Message{
		{Type: handoffmsg.MsgHello, MinVersion: 1, MaxVersion: 1},
		{Type: handoffmsg.MsgOffer, Version: 1, Items: 3},
		{Type: handoffmsg.MsgReady},
		{Type: handoffmsg.MsgDone},
		{Type: handoffmsg.MsgConns, Items: 1, Total: 2},
		{Type: handoffmsg.MsgAdopted, Items: 2},
		{Type: handoffmsg.MsgError, Code: 2, Reason: "why"},
		{Type: handoffmsg.MsgUpgrade},
		{Type: handoffmsg.MsgUpgraded, PID: 4242},
	} {
		b, _ := handoffmsg.Append(nil, m)
		seeds = append(seeds, b)
	}
	for range 100000 {
		b := bytes.Clone(seeds[r.IntN(len(seeds))])
		for range 1 + r.IntN(3) {
			switch r.IntN(3) {
			case 0:
				if len(b) > 0 {
					b[r.IntN(len(b))] = byte(r.Uint32())
				}
			case 1:
				b = b[:r.IntN(len(b)+1)]
			case 2:
				b = append(b, byte(r.Uint32()))
			}
		}
		checkParse(t, b)
	}
}

func checkParse(t *testing.T, b []byte) {
	m, err := handoffmsg.Parse(b)
	if err != nil {
		return
	}
	e, err := handoffmsg.Append(nil, m)
	if err != nil {
		t.Fatalf("Parse(%q) = %+v, which does not encode: %v", b, m, err)
	}
	if !bytes.Equal(e, b) {
		t.Fatalf("Parse(%q) = %+v, which encodes as %q", b, m, e)
	}
}

func FuzzParse(f *testing.F) {
	for _, m := range []handoffmsg.Message{
		{Type: handoffmsg.MsgHello, MinVersion: 1, MaxVersion: 1},
		{Type: handoffmsg.MsgOffer, Version: 1, Generation: 4, Items: 3, TimeoutMillis: 1000},
		{Type: handoffmsg.MsgReady},
		{Type: handoffmsg.MsgDone},
		{Type: handoffmsg.MsgConns, Items: 1, Total: 2},
		{Type: handoffmsg.MsgAdopted, Items: 2},
		{Type: handoffmsg.MsgError, Code: 2, Reason: "why"},
		{Type: handoffmsg.MsgUpgrade},
		{Type: handoffmsg.MsgUpgraded, PID: 4242},
	} {
		b, _ := handoffmsg.Append(nil, m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkParse(t, b) })
}
