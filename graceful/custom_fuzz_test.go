package graceful

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/unixmsg"
)

// FuzzCustom hands a client's Meta.Custom decoder arbitrary bytes, as a
// server could send them in an item's payload.
//
// Invariants: no panic; an error or a map, within a second; the error,
// through handlerMetaOf, matches ErrHandlerProtocol; the bytes allocated
// are bounded by a constant (what gob makes before it finds the input
// short, once) plus 64 per input byte, whatever counts the input
// announces; more than maxCustomLen bytes are refused; and a map that
// decodes encodes again, within the limit a sender keeps, to one that
// decodes equal.
func FuzzCustom(f *testing.F) {
	for _, s := range customSeeds() {
		if s.add {
			f.Add(s.b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		start := time.Now()
		before := heapAllocs()
		custom, err := decodeCustom(b)
		allocated := heapAllocs() - before
		if took := time.Since(start); took > time.Second {
			t.Fatalf("decoding %d bytes took %v", len(b), took)
		}
		if bound := customAllocBound + 64*uint64(len(b)); allocated > bound {
			t.Fatalf("decoding %d bytes allocated %d bytes, bound %d", len(b), allocated, bound)
		}
		if len(b) > maxCustomLen && err == nil {
			t.Fatalf("%d bytes decoded, limit %d", len(b), maxCustomLen)
		}
		_, merr := handlerMetaOf(unixmsg.Item{Name: "x", Payload: b})
		if len(b) == 0 {
			// No payload, no Custom: nothing is decoded.
			if merr != nil {
				t.Fatalf("handlerMetaOf with no payload: %v", merr)
			}
			return
		}
		if (err == nil) != (merr == nil) {
			t.Fatalf("decodeCustom: %v; handlerMetaOf: %v", err, merr)
		}
		if err != nil {
			if !errors.Is(merr, ErrHandlerProtocol) {
				t.Fatalf("handlerMetaOf: error %q does not match ErrHandlerProtocol", merr)
			}
			return
		}
		if custom == nil {
			t.Fatal("decodeCustom returned a nil map and no error")
		}
		if len(custom) == 0 {
			// A sender encodes no empty Custom; nothing to compare.
			return
		}
		_, _, again, err := Meta{Custom: custom}.encode()
		if err != nil {
			// Gob does not encode every value it decodes (a nil in a
			// map, say); that is the sender's error, not the receiver's.
			if strings.Contains(err.Error(), "limit") {
				t.Fatalf("%d bytes decoded to a Custom that encodes beyond the limit: %v", len(b), err)
			}
			return
		}
		back, err := decodeCustom(again)
		if err != nil {
			t.Fatalf("Custom %v, encoded again, does not decode: %v", custom, err)
		}
		if !customEqual(custom, back) {
			t.Fatalf("Custom %v, encoded again, decodes as %v", custom, back)
		}
	})
}

// customAllocBound is what a decode may allocate whatever its input:
// gob's own state, and a message buffer or a slice of up to 10 MiB that it
// makes from a length the input announces before it finds the input short
// (internal/saferio's chunk).
const customAllocBound = 12 << 20

// heapAllocs returns the bytes the process has allocated so far.
// (runtime/metrics counts small objects only as their spans fill.)
func heapAllocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// customEqual is reflect.DeepEqual with NaN equal to itself.
func customEqual(a, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !reflect.DeepEqual(nanFree(v), nanFree(w)) {
			return false
		}
	}
	return true
}

// nanFree returns v with NaNs replaced by a number that is not one, so
// that DeepEqual compares what gob carried.
func nanFree(v any) any {
	switch x := v.(type) {
	case float32:
		if x != x {
			return "NaN"
		}
	case float64:
		if math.IsNaN(x) {
			return "NaN"
		}
	case complex64, complex128:
		return gobBytes(x)
	case []float32, []float64, []complex64, []complex128:
		return gobBytes(x)
	}
	return v
}

// gobBytes returns v's gob encoding, in which a NaN is a bit pattern.
func gobBytes(v any) []byte {
	var buf bytes.Buffer
	gob.NewEncoder(&buf).Encode(v)
	return buf.Bytes()
}

type customSeed struct {
	name string
	b    []byte
	add  bool
}

// gobOf encodes a Custom as a sender does, with its keys in order: gob
// encodes a map in Go's iteration order, and seeds must not change from
// run to run.
func gobOf(m map[string]any) []byte {
	keys := slices.Sorted(maps.Keys(m))
	for range 1000 {
		var buf bytes.Buffer
		if err := gob.NewEncoder(&buf).Encode(m); err != nil {
			panic(err)
		}
		b := buf.Bytes()
		if len(keys) == 0 {
			return b
		}
		at := 0
		for _, k := range keys {
			i := bytes.Index(b[at:], append([]byte{byte(len(k))}, k...))
			if i < 0 {
				break
			}
			at += i + 1 + len(k)
			if k == keys[len(keys)-1] {
				return b
			}
		}
	}
	panic("no encoding with the keys in order")
}

// gobUint appends x in gob's unsigned encoding: below 128 one byte, else
// the negated byte count and the bytes, big-endian.
func gobUint(b []byte, x uint64) []byte {
	if x < 128 {
		return append(b, byte(x))
	}
	var t [8]byte
	n := 8
	for ; x > 0; x >>= 8 {
		n--
		t[n] = byte(x)
	}
	return append(append(b, byte(-(8-n))), t[n:]...)
}

// readGobUint reads one unsigned integer in gob's encoding from b.
func readGobUint(b []byte) (x uint64, n int) {
	if len(b) == 0 {
		return 0, 0
	}
	if b[0] < 128 {
		return uint64(b[0]), 1
	}
	k := int(-int8(b[0]))
	if k > 8 || 1+k > len(b) {
		return 0, 0
	}
	for _, c := range b[1 : 1+k] {
		x = x<<8 | uint64(c)
	}
	return x, 1 + k
}

// gobMessages splits a gob stream into its messages' bodies.
func gobMessages(enc []byte) [][]byte {
	var msgs [][]byte
	for len(enc) > 0 {
		l, n := readGobUint(enc)
		msgs = append(msgs, enc[n:n+int(l)])
		enc = enc[n+int(l):]
	}
	return msgs
}

// withCount returns enc with the count in its message i (-1: the last)
// that follows the type id, skip uints and the singleton's 0 delta
// re-encoded as count: what a hostile peer writes to make gob allocate.
func withCount(enc []byte, i, skip int, count uint64) []byte {
	msgs := gobMessages(enc)
	if i < 0 {
		i = len(msgs) - 1
	}
	body := msgs[i]
	_, at := readGobUint(body) // the type id, as an int: same shape
	for range skip {
		_, n := readGobUint(body[at:])
		at += n
	}
	at++ // the 0 delta
	_, cn := readGobUint(body[at:])
	nb := append(bytes.Clone(body[:at]), gobUint(nil, count)...)
	msgs[i] = append(nb, body[at+cn:]...)
	var out []byte
	for _, m := range msgs {
		out = append(gobUint(out, uint64(len(m))), m...)
	}
	return out
}

func customSeeds() []customSeed {
	seeds := customSeedList()
	for _, v := range []any{
		int8(-1), uint64(math.MaxUint64), float32(0.5), complex(1, 2), true, []byte("x"),
		[]int{1, -1}, []string{"", "a"}, []bool{true}, uintptr(7),
	} {
		seeds = append(seeds, customSeed{name: "type-" + strings.Replace(fmt.Sprintf("%T", v), "[]", "slice-", 1), b: gobOf(map[string]any{"v": v})})
	}
	return seeds
}

func customSeedList() []customSeed {
	one := gobOf(map[string]any{"a": 1})
	// The value inside an interface comes in a message of its own: type
	// id, byte count, the singleton's 0 delta, then the slice length.
	slice := gobOf(map[string]any{"s": []int{1, 2}})
	return []customSeed{
		{name: "basic", b: gobOf(map[string]any{"n": 42}), add: true},
		{name: "two-entries", b: gobOf(map[string]any{"a": "x", "b": 1.5}), add: true},
		{name: "nan", b: gobOf(map[string]any{"nan": math.NaN()})},
		{name: "nan-complex", b: gobOf(map[string]any{"c": complex(math.NaN(), 0)})},
		{name: "empty-map", b: gobOf(map[string]any{})},
		{name: "empty", b: nil},
		{name: "garbage", b: []byte("not gob at all")},
		{name: "truncated", b: one[:len(one)-1]},
		{name: "map-count-huge", b: withCount(one, 1, 0, 1<<22), add: true},
		{name: "map-count-max", b: withCount(one, 1, 0, math.MaxInt64)},
		{name: "slice-length-huge", b: withCount(slice, -1, 1, 1<<40), add: true},
		{name: "slice-length-10MiB", b: withCount(slice, -1, 1, 10<<20/8-1)},
		{name: "at-limit", b: customOfLen(maxCustomLen)},
		{name: "past-limit", b: customOfLen(maxCustomLen + 1)},
		{name: "unregistered-type", b: unregisteredCustom()},
	}
}

// customOfLen returns a Custom whose gob encoding is exactly n bytes.
func customOfLen(n int) []byte {
	for pad := n; pad > 0; pad-- {
		b := gobOf(map[string]any{"p": strings.Repeat("x", pad)})
		if len(b) == n {
			return b
		}
		if len(b) < n {
			break
		}
	}
	panic("no Custom of that length")
}

// unregisteredCustom is a Custom holding a type the receiver has not
// registered: gob refuses it.
func unregisteredCustom() []byte {
	b := gobOf(map[string]any{"a": 1})
	return bytes.Replace(b, []byte("\x03int"), []byte("\x03inu"), 1)
}

var _ = addFuzzSeeds(func() map[string][][]byte {
	m := map[string][][]byte{}
	for _, s := range customSeeds() {
		m["FuzzCustom/"+s.name] = [][]byte{s.b}
	}
	return m
})
