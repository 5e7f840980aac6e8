//go:build linux

package wire_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fdpass/fdpass/internal/fdtest"
	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg/wire"
)

func checkLeaks(t testing.TB) {
	t.Helper()
	fdtest.CheckLeaks(t)
}

func hsHdr(typ wire.FrameType, nfds, length int) []byte {
	return wire.AppendHeader(nil, wire.Header{Type: typ, NFDs: uint32(nfds), Length: uint32(length)})
}

func hsAck(a wire.Ack) []byte {
	body := wire.AppendAck(nil, a)
	return append(hsHdr(wire.FrameAck, 0, len(body)), body...)
}

// hsItems returns n items of kind File named item-0, item-1, ...
func hsItems(n int) []wire.Item {
	items := make([]wire.Item, n)
	for i := range items {
		items[i] = wire.Item{Kind: kinds.File, Name: fmt.Sprintf("item-%d", i)}
	}
	return items
}

func hsCat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// Decoder tests: the attribution of descriptors to frames, with fake
// descriptor numbers, and every number fed coming back exactly once.

type hsRead struct {
	data []byte
	fds  []int
}

// hsFake hands out fake descriptor numbers, each once.
type hsFake struct{ next int }

func (f *hsFake) n(k int) []int {
	s := make([]int, k)
	for i := range s {
		f.next++
		s[i] = 100000 + f.next
	}
	return s
}

// hsFrames returns the encoded frames of a batch of n File items.
func hsFrames(t testing.TB, n int) [][]byte {
	t.Helper()
	_, frames, err := wire.EncodeBatch(nil, hsItems(n), nil, 0, wire.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, len(frames))
	for i, fr := range frames {
		out[i] = hsCat(fr.Header, fr.Body)
	}
	return out
}

// hsFeed feeds reads to d and returns the first error; after an error it
// keeps feeding, and every later Feed must fail too.
func hsFeed(t *testing.T, d *wire.Decoder, reads []hsRead) error {
	t.Helper()
	var first error
	for i, r := range reads {
		err := d.Feed(r.data, slices.Clone(r.fds))
		if first != nil && err == nil {
			t.Errorf("Feed %d returned nil after an earlier error %v", i, first)
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// hsSameFDs checks that got holds exactly the numbers of fed, each once.
func hsSameFDs(t *testing.T, what string, fed, got []int) {
	t.Helper()
	a, b := slices.Clone(fed), slices.Clone(got)
	slices.Sort(a)
	slices.Sort(b)
	if !slices.Equal(a, b) {
		t.Errorf("%s: descriptors fed %v, handed back %v", what, a, b)
	}
}

func TestDecoderAttribution(t *testing.T) {
	f3 := hsFrames(t, 3) // HEAD, DATA with 3 descriptors
	H, D := f3[0], f3[1]
	f600 := hsFrames(t, 600) // HEAD, DATA 253, DATA 253, DATA 94
	if len(f600) != 4 {
		t.Fatalf("a batch of 600 encodes as %d frames, want 4", len(f600))
	}
	ack := hsAck(wire.Ack{Status: wire.StatusOK})
	type tcase struct {
		name     string
		messages bool
		reads    func(fk *hsFake) []hsRead
		want     error // nil: whole messages
		items    []int // with want nil: items per message (-1 for an ACK)
	}
	bytewise := func(b []byte) []hsRead {
		r := make([]hsRead, len(b))
		for i := range b {
			r[i] = hsRead{data: b[i : i+1]}
		}
		return r
	}
	cases := []tcase{
		{name: "whole batch in one read", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{hsCat(H, D), fk.n(3)}}
		}, items: []int{3}},
		{name: "HEAD and DATA in separate reads", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{H, nil}, {D, fk.n(3)}}
		}, items: []int{3}},
		{name: "DATA split, descriptors with its first byte", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{hsCat(H, D[:5]), fk.n(3)}, {D[5:], nil}}
		}, items: []int{3}},
		{name: "byte by byte, descriptors with DATA's first byte", reads: func(fk *hsFake) []hsRead {
			r := bytewise(hsCat(H, D))
			r[len(H)].fds = fk.n(3)
			return r
		}, items: []int{3}},
		{name: "two batches and an ACK", reads: func(fk *hsFake) []hsRead {
			// Impossible from a kernel (a read stops after descriptors),
			// but the rule holds: the first DATA claims the group.
			return []hsRead{{hsCat(H, D), fk.n(3)}, {hsCat(H, D), fk.n(3)}, {ack, nil}}
		}, items: []int{3, 3, -1}},
		{name: "batch of 600 over four frames, one read each", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{f600[0], nil}, {f600[1], fk.n(253)}, {f600[2], fk.n(253)}, {f600[3], fk.n(94)}}
		}, items: []int{600}},
		{name: "empty batch", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{hsFrames(t, 0)[0], nil}}
		}, items: []int{0}},

		{name: "descriptors with a later read than their frame's first byte", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{hsCat(H, D[:5]), nil}, {D[5:], fk.n(3)}}
		}, want: wire.ErrMissingFDs},
		{name: "descriptors with the frame's last byte", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{hsCat(H, D[:len(D)-1]), nil}, {D[len(D)-1:], fk.n(3)}}
		}, want: wire.ErrMissingFDs},
		{name: "descriptors with the second byte of the frame, byte by byte", reads: func(fk *hsFake) []hsRead {
			r := bytewise(hsCat(H, D))
			r[len(H)+1].fds = fk.n(3)
			return r
		}, want: wire.ErrUnexpectedFDs}, // caught as they arrive, mid-frame
		{name: "descriptors with HEAD's read, DATA in the next", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{H, fk.n(3)}, {D, nil}}
		}, want: wire.ErrUnexpectedFDs},
		{name: "descriptors with a read inside HEAD", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{H[:4], nil}, {H[4:], fk.n(1)}, {D, fk.n(3)}}
		}, want: wire.ErrUnexpectedFDs},
		{name: "fewer descriptors than announced", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{hsCat(H, D), fk.n(2)}}
		}, want: wire.ErrMissingFDs},
		{name: "more descriptors than announced", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{hsCat(H, D), fk.n(4)}}
		}, want: wire.ErrUnexpectedFDs},
		{name: "descriptors with no bytes", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{nil, fk.n(2)}}
		}, want: wire.ErrUnexpectedFDs},
		{name: "descriptors with no bytes inside a batch", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{hsCat(H, D[:5]), fk.n(3)}, {nil, fk.n(1)}, {D[5:], nil}}
		}, want: wire.ErrUnexpectedFDs},
		{name: "a second group for a frame that claimed one", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{hsCat(H, D[:5]), fk.n(3)}, {D[5:], fk.n(1)}}
		}, want: wire.ErrUnexpectedFDs},
		{name: "descriptors with an ACK", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{ack, fk.n(1)}}
		}, want: wire.ErrUnexpectedFDs},
		{name: "descriptors with bytes after a whole batch", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{hsCat(H, D), fk.n(3)}, {[]byte("xy"), fk.n(2)}, {[]byte("not a header at all"), nil}}
		}, want: wire.ErrBadMagic},
		{name: "all descriptors of a split batch in the first DATA's read", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{f600[0], nil}, {hsCat(f600[1], f600[2], f600[3]), fk.n(600)}}
		}, want: wire.ErrUnexpectedFDs},
		{name: "the next frame's start glued to a read that carries none of its descriptors", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{f600[0], nil}, {hsCat(f600[1], f600[2][:3]), fk.n(253)}, {hsCat(f600[2][3:], f600[3]), fk.n(253)}}
		}, want: wire.ErrMissingFDs},
		{name: "reads after the error", reads: func(fk *hsFake) []hsRead {
			return []hsRead{{nil, fk.n(1)}, {hsCat(H, D), fk.n(3)}, {D, fk.n(2)}}
		}, want: wire.ErrUnexpectedFDs},

		{name: "one frame per message", messages: true, reads: func(fk *hsFake) []hsRead {
			return []hsRead{{H, nil}, {D, fk.n(3)}, {ack, nil}}
		}, items: []int{3, -1}},
		{name: "two frames in one message", messages: true, reads: func(fk *hsFake) []hsRead {
			return []hsRead{{hsCat(H, D), fk.n(3)}}
		}, want: wire.ErrMalformed},
		{name: "a frame split over two messages", messages: true, reads: func(fk *hsFake) []hsRead {
			return []hsRead{{H, nil}, {D[:5], fk.n(3)}, {D[5:], nil}}
		}, want: wire.ErrMalformed},
		{name: "message shorter than a header, with descriptors", messages: true, reads: func(fk *hsFake) []hsRead {
			return []hsRead{{H[:10], fk.n(2)}}
		}, want: wire.ErrMalformed},
		{name: "message of descriptors only", messages: true, reads: func(fk *hsFake) []hsRead {
			return []hsRead{{H, nil}, {nil, fk.n(3)}}
		}, want: wire.ErrUnexpectedFDs},
		{name: "descriptors with HEAD's message", messages: true, reads: func(fk *hsFake) []hsRead {
			return []hsRead{{H, fk.n(3)}, {D, nil}}
		}, want: wire.ErrUnexpectedFDs},
		{name: "fewer descriptors than announced in a message", messages: true, reads: func(fk *hsFake) []hsRead {
			return []hsRead{{H, nil}, {D, fk.n(1)}}
		}, want: wire.ErrMissingFDs},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkLeaks(t)
			var fk hsFake
			reads := c.reads(&fk)
			var fed []int
			for _, r := range reads {
				fed = append(fed, r.fds...)
			}

			// As a Conn uses it: take messages while all is well, Drain
			// after an error.
			d := wire.NewDecoder(wire.Limits{}, c.messages)
			err := hsFeed(t, d, reads)
			var got []int
			if c.want == nil {
				if err != nil {
					t.Fatalf("Feed: %v, want success", err)
				}
				var items []int
				var inOrder []int
				for {
					m, ok := d.Next()
					if !ok {
						break
					}
					if m.Ack != nil {
						items = append(items, -1)
					} else {
						items = append(items, len(m.Items))
						if len(m.FDs) != len(m.Items) {
							t.Errorf("message of %d items with %d descriptors", len(m.Items), len(m.FDs))
						}
					}
					inOrder = append(inOrder, m.FDs...)
				}
				if !slices.Equal(items, c.items) {
					t.Errorf("messages of %v items, want %v", items, c.items)
				}
				if !slices.Equal(inOrder, fed) {
					t.Errorf("descriptors handed out in order %v, fed in order %v", inOrder, fed)
				}
				if !d.Idle() {
					t.Errorf("decoder not idle after whole messages")
				}
				if rest := d.Drain(); len(rest) != 0 {
					t.Errorf("Drain after whole messages returned %v", rest)
				}
				return
			}
			if err == nil {
				t.Fatalf("Feed returned no error, want one matching %q", c.want)
			}
			if !errors.Is(err, c.want) {
				t.Errorf("Feed: %v\nwant an error matching %q", err, c.want)
			}
			if d.Err() != err {
				t.Errorf("Err() = %v, want the error Feed returned, %v", d.Err(), err)
			}
			got = d.Drain()
			hsSameFDs(t, "Drain after the error", fed, got)
			if again := d.Drain(); len(again) != 0 {
				t.Errorf("a second Drain returned %v", again)
			}

			// Taking what messages there are before draining hands each
			// number back once too.
			var fk2 hsFake
			d2 := wire.NewDecoder(wire.Limits{}, c.messages)
			hsFeed(t, d2, c.reads(&fk2))
			got = nil
			for {
				m, ok := d2.Next()
				if !ok {
					break
				}
				got = append(got, m.FDs...)
			}
			got = append(got, d2.Drain()...)
			hsSameFDs(t, "Next, then Drain, after the error", fed, got)
		})
	}
}

// TestDecoderStreamChunking cuts a batch's byte stream at random places, as
// a stream socket may, with each frame's descriptors on the read that holds
// its first byte and never two frames' descriptors on one read (the kernel
// stops a read after the data of a sendmsg that carried descriptors). Every
// such cut must decode; moving a frame's descriptors to a later read must
// fail with ErrMissingFDs. Either way each number comes back once.
func TestDecoderStreamChunking(t *testing.T) {
	checkLeaks(t)
	frames := hsFrames(t, 600)
	nfds := []int{0, 253, 253, 94}
	var stream []byte
	var starts []int
	for _, fr := range frames {
		starts = append(starts, len(stream))
		stream = append(stream, fr...)
	}
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 1))
		cut := map[int]bool{}
		for range rng.IntN(12) {
			cut[1+rng.IntN(len(stream)-1)] = true
		}
		// Separate the first bytes of any two frames with descriptors.
		for i := 1; i+1 < len(starts); i++ {
			lo, hi := starts[i], starts[i+1]
			cut[lo+1+rng.IntN(hi-lo)] = true
		}
		bounds := []int{0}
		for c := range cut {
			if c < len(stream) {
				bounds = append(bounds, c)
			}
		}
		slices.Sort(bounds)
		bounds = append(bounds, len(stream))
		chunkOf := func(off int) int {
			i, found := slices.BinarySearch(bounds, off)
			if !found {
				i--
			}
			return i
		}
		var fk hsFake
		reads := make([]hsRead, len(bounds)-1)
		for i := range reads {
			reads[i].data = stream[bounds[i]:bounds[i+1]]
		}
		var fed []int
		for i, n := range nfds {
			if n == 0 {
				continue
			}
			fds := fk.n(n)
			fed = append(fed, fds...)
			c := chunkOf(starts[i])
			reads[c].fds = append(reads[c].fds, fds...)
		}
		t.Run(fmt.Sprintf("seed %d, %d reads", seed, len(reads)), func(t *testing.T) {
			d := wire.NewDecoder(wire.Limits{}, false)
			if err := hsFeed(t, d, reads); err != nil {
				t.Fatalf("Feed: %v", err)
			}
			m, ok := d.Next()
			if !ok {
				t.Fatal("no message")
			}
			if len(m.Items) != 600 || !slices.Equal(m.FDs, fed) {
				t.Errorf("message of %d items with descriptors in another order than fed", len(m.Items))
			}
			if !d.Idle() {
				t.Error("decoder not idle")
			}

			// Move one frame's descriptors to the next read, where the
			// next frame does not start with its own.
			for i := 1; i < len(starts); i++ {
				c := chunkOf(starts[i])
				if c+1 >= len(reads) || len(reads[c+1].fds) > 0 {
					continue
				}
				moved := slices.Clone(reads)
				moved[c+1].fds, moved[c].fds = moved[c].fds, nil
				d := wire.NewDecoder(wire.Limits{}, false)
				err := hsFeed(t, d, moved)
				// Caught as they arrive in the middle of the frame, or,
				// when that read ends the frame, as missing from it.
				if !errors.Is(err, wire.ErrUnexpectedFDs) && !errors.Is(err, wire.ErrMissingFDs) {
					t.Errorf("frame %d's descriptors one read late: %v, want ErrUnexpectedFDs or ErrMissingFDs", i, err)
				}
				var got []int
				for {
					m, ok := d.Next()
					if !ok {
						break
					}
					got = append(got, m.FDs...)
				}
				hsSameFDs(t, "after moving descriptors", fed, append(got, d.Drain()...))
				break
			}
		})
	}
}

// TestDecoderExpecting: Expecting counts down from what HEAD announces as
// frames bring descriptors, and is 0 outside a batch and after an error.
func TestDecoderExpecting(t *testing.T) {
	checkLeaks(t)
	frames := hsFrames(t, 600)
	nfds := []int{0, 253, 253, 94}
	var fk hsFake
	d := wire.NewDecoder(wire.Limits{}, false)
	if got := d.Expecting(); got != 0 {
		t.Errorf("before HEAD: Expecting() = %d, want 0", got)
	}
	left := 600
	for i, fr := range frames {
		if err := d.Feed(fr, fk.n(nfds[i])); err != nil {
			t.Fatalf("Feed frame %d: %v", i, err)
		}
		left -= nfds[i]
		if got := d.Expecting(); got != left {
			t.Errorf("after frame %d: Expecting() = %d, want %d", i, got, left)
		}
	}
	if got := d.Expecting(); got != 0 {
		t.Errorf("after the batch: Expecting() = %d, want 0", got)
	}
	if m, ok := d.Next(); !ok || len(m.FDs) != 600 {
		t.Fatalf("Next: %d descriptors, %v", len(m.FDs), ok)
	}

	// A broken batch expects nothing more.
	d = wire.NewDecoder(wire.Limits{}, false)
	if err := d.Feed(frames[0], nil); err != nil {
		t.Fatal(err)
	}
	if got := d.Expecting(); got != 600 {
		t.Errorf("after HEAD: Expecting() = %d, want 600", got)
	}
	fds := fk.n(300)
	if err := d.Feed(frames[1], fds); err == nil {
		t.Fatal("a frame with 47 descriptors too many was accepted")
	}
	if got := d.Expecting(); got != 0 {
		t.Errorf("after an error: Expecting() = %d, want 0", got)
	}
	d.Drain()
}
