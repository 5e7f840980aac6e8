package graceful_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/fdpass/fdpass/graceful"
)

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range []graceful.Message{
		{Type: graceful.MsgHello, MinVersion: 1, MaxVersion: 1},
		{Type: graceful.MsgHello, MinVersion: 1, MaxVersion: 7, Features: 0xdeadbeef},
		{Type: graceful.MsgOffer, Version: 1, Features: graceful.FeatureMigrate, Generation: 1<<63 + 5, Items: 1001, TimeoutMillis: 30000},
		{Type: graceful.MsgReady},
		{Type: graceful.MsgReady, Features: graceful.FeatureMigrate},
		{Type: graceful.MsgDone, Features: 3},
		{Type: graceful.MsgConns, Items: 2048, Total: 10000},
		{Type: graceful.MsgConns},
		{Type: graceful.MsgAdopted, Items: 10000},
		{Type: graceful.MsgError, Code: graceful.CodeTimeout},
		{Type: graceful.MsgError, Code: 999, Reason: strings.Repeat("é", graceful.MaxReasonLen/2)},
	} {
		t.Run(m.Type.String(), func(t *testing.T) {
			b, err := graceful.AppendMessage([]byte("prefix"), m)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatal("AppendMessage lost dst")
			}
			got, err := graceful.ParseMessage(b[len("prefix"):])
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
	b, err := graceful.AppendMessage(nil, graceful.Message{Type: graceful.MsgError, Code: graceful.CodeVersion, Reason: "no"})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("FDHO\x01\x05\x06\x00\x02\x00\x02\x00no")
	if !bytes.Equal(b, want) {
		t.Errorf("ERROR encodes as %q, want %q", b, want)
	}
	b, _ = graceful.AppendMessage(nil, graceful.Message{Type: graceful.MsgHello, MinVersion: 1, MaxVersion: 2, Features: 1})
	want = []byte("FDHO\x01\x01\x08\x00\x01\x00\x02\x00\x01\x00\x00\x00")
	if !bytes.Equal(b, want) {
		t.Errorf("HELLO encodes as %q, want %q", b, want)
	}
	b, _ = graceful.AppendMessage(nil, graceful.Message{Type: graceful.MsgConns, Items: 2, Total: 0x0103})
	want = []byte("FDHO\x01\x06\x08\x00\x02\x00\x00\x00\x03\x01\x00\x00")
	if !bytes.Equal(b, want) {
		t.Errorf("CONNS encodes as %q, want %q", b, want)
	}
	b, _ = graceful.AppendMessage(nil, graceful.Message{Type: graceful.MsgAdopted, Items: 5})
	want = []byte("FDHO\x01\x07\x04\x00\x05\x00\x00\x00")
	if !bytes.Equal(b, want) {
		t.Errorf("ADOPTED encodes as %q, want %q", b, want)
	}
}

func TestParseMessageErrors(t *testing.T) {
	hello, _ := graceful.AppendMessage(nil, graceful.Message{Type: graceful.MsgHello, MinVersion: 1, MaxVersion: 1})
	offer, _ := graceful.AppendMessage(nil, graceful.Message{Type: graceful.MsgOffer, Version: 1})
	errMsg, _ := graceful.AppendMessage(nil, graceful.Message{Type: graceful.MsgError, Code: 1, Reason: "abc"})
	mod := func(b []byte, f func(b []byte) []byte) []byte { return f(bytes.Clone(b)) }
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, graceful.ErrMalformed},
		{"short magic", []byte("FD"), graceful.ErrMalformed},
		{"magic only", []byte("FDHO"), graceful.ErrMalformed},
		{"bad magic", []byte("FDPS\x01\x01\x00\x00"), graceful.ErrBadMagic},
		{"bad magic short", []byte("HTTP/"), graceful.ErrBadMagic},
		{"version", mod(hello, func(b []byte) []byte { b[4] = 2; return b }), graceful.ErrVersion},
		{"unknown type", []byte("FDHO\x01\x09\x00\x00"), graceful.ErrUnknownMessage},
		{"reserved type", []byte("FDHO\x01\x08\x00\x00"), graceful.ErrUnknownMessage},
		{"reserved type 15", []byte("FDHO\x01\x0f\x00\x00"), graceful.ErrUnknownMessage},
		{"conns short", []byte("FDHO\x01\x06\x04\x00\x00\x00\x00\x00"), graceful.ErrMalformed},
		{"conns batch > total", []byte("FDHO\x01\x06\x08\x00\x02\x00\x00\x00\x01\x00\x00\x00"), graceful.ErrMalformed},
		{"adopted long", []byte("FDHO\x01\x07\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00"), graceful.ErrMalformed},
		{"type zero", []byte("FDHO\x01\x00\x00\x00"), graceful.ErrUnknownMessage},
		{"truncated body", hello[:len(hello)-1], graceful.ErrMalformed},
		{"trailing byte", append(bytes.Clone(hello), 0), graceful.ErrMalformed},
		{"wrong body length", []byte("FDHO\x01\x03\x02\x00\x00\x00"), graceful.ErrMalformed},
		{"hello min zero", mod(hello, func(b []byte) []byte { b[8] = 0; return b }), graceful.ErrMalformed},
		{"hello min > max", mod(hello, func(b []byte) []byte { b[8] = 3; return b }), graceful.ErrMalformed},
		{"offer version zero", mod(offer, func(b []byte) []byte { b[8] = 0; return b }), graceful.ErrMalformed},
		{"offer reserved", mod(offer, func(b []byte) []byte { b[10] = 1; return b }), graceful.ErrMalformed},
		{"error code zero", mod(errMsg, func(b []byte) []byte { b[8] = 0; return b }), graceful.ErrMalformed},
		{"error reason length", mod(errMsg, func(b []byte) []byte { b[10] = 9; return b }), graceful.ErrMalformed},
		{"error short body", []byte("FDHO\x01\x05\x02\x00\x01\x00"), graceful.ErrMalformed},
		{"error reason too long", append([]byte("FDHO\x01\x05\x05\x04\x01\x00\x01\x04"), make([]byte, 1025)...), graceful.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := graceful.ParseMessage(tc.b)
			if !errors.Is(err, tc.want) {
				t.Errorf("ParseMessage(%q) = %+v, %v; want %v", tc.b, m, err, tc.want)
			}
		})
	}
}

func TestAppendMessageErrors(t *testing.T) {
	for _, tc := range []struct {
		m    graceful.Message
		want error
	}{
		{graceful.Message{}, graceful.ErrUnknownMessage},
		{graceful.Message{Type: 8}, graceful.ErrUnknownMessage},
		{graceful.Message{Type: graceful.MsgConns, Items: 3, Total: 2}, graceful.ErrMalformed},
		{graceful.Message{Type: graceful.MsgHello}, graceful.ErrMalformed},
		{graceful.Message{Type: graceful.MsgOffer}, graceful.ErrMalformed},
		{graceful.Message{Type: graceful.MsgError}, graceful.ErrMalformed},
		{graceful.Message{Type: graceful.MsgError, Code: 1, Reason: strings.Repeat("x", graceful.MaxReasonLen+1)}, graceful.ErrMalformed},
	} {
		if _, err := graceful.AppendMessage(nil, tc.m); !errors.Is(err, tc.want) {
			t.Errorf("AppendMessage(%+v): %v, want %v", tc.m, err, tc.want)
		}
	}
}

// TestParseMessageNoPanic feeds mutations of valid messages; ParseMessage
// must return, and whatever parses must encode back to the same bytes.
func TestParseMessageNoPanic(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var seeds [][]byte
	for _, m := range []graceful.Message{
		{Type: graceful.MsgHello, MinVersion: 1, MaxVersion: 1},
		{Type: graceful.MsgOffer, Version: 1, Items: 3},
		{Type: graceful.MsgReady},
		{Type: graceful.MsgDone},
		{Type: graceful.MsgConns, Items: 1, Total: 2},
		{Type: graceful.MsgAdopted, Items: 2},
		{Type: graceful.MsgError, Code: 2, Reason: "why"},
	} {
		b, _ := graceful.AppendMessage(nil, m)
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
	m, err := graceful.ParseMessage(b)
	if err != nil {
		return
	}
	e, err := graceful.AppendMessage(nil, m)
	if err != nil {
		t.Fatalf("ParseMessage(%q) = %+v, which does not encode: %v", b, m, err)
	}
	if !bytes.Equal(e, b) {
		t.Fatalf("ParseMessage(%q) = %+v, which encodes as %q", b, m, e)
	}
}

func FuzzParseMessage(f *testing.F) {
	for _, m := range []graceful.Message{
		{Type: graceful.MsgHello, MinVersion: 1, MaxVersion: 1},
		{Type: graceful.MsgOffer, Version: 1, Generation: 4, Items: 3, TimeoutMillis: 1000},
		{Type: graceful.MsgReady},
		{Type: graceful.MsgDone},
		{Type: graceful.MsgConns, Items: 1, Total: 2},
		{Type: graceful.MsgAdopted, Items: 2},
		{Type: graceful.MsgError, Code: 2, Reason: "why"},
	} {
		b, _ := graceful.AppendMessage(nil, m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkParse(t, b) })
}
