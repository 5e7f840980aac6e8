package main

import (
	"encoding/binary"
	"flag"
	"strings"
	"testing"

	"github.com/fdpass/fdpass/internal/fuzzcorpus"
)

// FuzzDecodeSession hands decodeSession the state a predecessor sends with
// a migrated connection, as arbitrary bytes; it also builds a session from
// the input and round-trips it.
//
// Invariants: no panic; a state that decodes encodes again to one that
// decodes to the same session; and any session, its nick and count taken
// from the input, decodes from its own encoding unchanged.
func FuzzDecodeSession(f *testing.F) {
	for _, s := range sessionSeeds() {
		if s.add {
			f.Add(s.b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeSession(b)
		if err == nil {
			again, err := decodeSession(st.encode())
			if err != nil {
				t.Fatalf("decodeSession(%q) = %+v, whose encoding %q does not decode: %v", b, st, st.encode(), err)
			}
			if again != st {
				t.Fatalf("decodeSession(%q) = %+v, which encodes and decodes as %+v", b, st, again)
			}
		} else if !strings.Contains(err.Error(), "bad session state") {
			t.Fatalf("decodeSession(%q): unexpected error %v", b, err)
		}

		// A session built from the input: the first 8 bytes are the
		// count, the rest the nick.
		var built session
		if len(b) >= 8 {
			built.count = int(int64(binary.LittleEndian.Uint64(b)))
			built.nick = string(b[8:])
		}
		back, err := decodeSession(built.encode())
		if err != nil {
			t.Fatalf("session %+v encodes as %q, which does not decode: %v", built, built.encode(), err)
		}
		if back != built {
			t.Fatalf("session %+v encodes as %q, which decodes as %+v", built, built.encode(), back)
		}
	})
}

type sessionSeed struct {
	name string
	b    []byte
	add  bool
}

func sessionSeeds() []sessionSeed {
	le := func(n int64, nick string) []byte {
		return append(binary.LittleEndian.AppendUint64(nil, uint64(n)), nick...)
	}
	return []sessionSeed{
		{name: "anon", b: session{nick: "anon"}.encode(), add: true},
		{name: "nick", b: session{nick: "ada", count: 12}.encode(), add: true},
		{name: "empty-nick", b: []byte("3 ")},
		{name: "nick-with-spaces", b: []byte("1 a b  c")},
		{name: "nick-with-newline", b: []byte("1 a\nb")},
		{name: "negative-count", b: []byte("-5 x")},
		{name: "plus-count", b: []byte("+5 x")},
		{name: "leading-zeros", b: []byte("007 bond")},
		{name: "count-overflow", b: []byte("9223372036854775808 x")},
		{name: "count-max", b: []byte("9223372036854775807 x")},
		{name: "no-space", b: []byte("12")},
		{name: "no-count", b: []byte(" ada")},
		{name: "not-a-number", b: []byte("twelve ada")},
		{name: "http-state", b: []byte("net/http")},
		{name: "empty", b: nil},
		{name: "invalid-utf8", b: []byte("1 \xff\xfe")},
		{name: "built-max", b: le(1<<63-1, "ada")},
		{name: "built-min", b: le(-1<<63, "a b")},
	}
}

// The named seed files under testdata/fuzz/FuzzDecodeSession/ are
// generated from sessionSeeds by
//
//	go test ./examples/chat -run '^TestFuzzCorpus$' -update-corpus
//
// and TestFuzzCorpus checks that they are still what the list says. Files
// named by a hash are findings of the fuzzer, kept as regression entries.
var updateCorpus = flag.Bool("update-corpus", false, "rewrite the named seed files under testdata/fuzz")

func TestFuzzCorpus(t *testing.T) {
	files := map[string][][]byte{}
	for _, s := range sessionSeeds() {
		files["FuzzDecodeSession/"+s.name] = [][]byte{s.b}
	}
	fuzzcorpus.Sync(t, files, *updateCorpus)
}
