package fuzz_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg/wire"
)

// FuzzRoundTrip builds a batch from spec (see buildItems) and payload and
// encodes it with the limits and flags chosen by cfg:
//
//	cfg[0]   bit 0: HeadFlagAck; bit 1: smallLimits instead of the defaults
//	cfg[1]   MaxFrame in units of 16 bytes, unless 0
//	cfg[2]   MaxFDsPerMessage, unless 0
//	cfg[3:]  read lengths minus one for the stream decoding
//
// Invariants: EncodeBatch fails exactly when the batch breaks a limit or
// the format (and then with ErrLimit or ErrMalformed); its frames keep to
// MaxFrame and MaxFDsPerMessage; decoded frame by frame on a message
// decoder, and as one stream cut at fuzzed points with each frame's
// descriptors on the read that holds its first byte, they yield exactly one
// message equal to the input, descriptors in order; and
// ParseRecords(AppendRecords(items)) equals items.
func FuzzRoundTrip(f *testing.F) {
	for _, s := range roundTripSeeds() {
		if s.add {
			f.Add(s.spec, s.payload, s.cfg)
		}
	}
	f.Fuzz(func(t *testing.T, spec, payload, cfg []byte) {
		c := reader{cfg}
		mode := c.byte()
		var lim wire.Limits
		if mode&2 != 0 {
			lim = smallLimits
		}
		if v := c.byte(); v != 0 {
			// 16 to 4080: either side of the smallest MaxFrame.
			lim.MaxFrame = int(v) * 16
		}
		if v := c.byte(); v != 0 {
			lim.MaxFDsPerMessage = int(v)
		}
		flags := uint32(mode & 1)
		items := buildItems(spec)
		payload = bytes.Clone(payload)
		if err := roundTrip(items, payload, flags, lim, c.b); err != nil {
			t.Fatalf("limits %+v, flags %d, %d items, payload of %d bytes: %v", lim, flags, len(items), len(payload), err)
		}
	})
}

func roundTrip(items []wire.Item, payload []byte, flags uint32, lim wire.Limits, cuts []byte) error {
	valid := checkItems(items, payload, lim)
	frames, err := encodeBatch(items, payload, flags, lim)
	if err != nil {
		if !isAny(err, wire.ErrLimit, wire.ErrMalformed) {
			return fmt.Errorf("EncodeBatch: error %q is neither ErrLimit nor ErrMalformed", err)
		}
		if valid == nil {
			return fmt.Errorf("EncodeBatch refused a batch within the limits: %v", err)
		}
		if _, err := wire.AppendRecords(nil, items, lim); err != nil && !isAny(err, wire.ErrLimit, wire.ErrMalformed) {
			return fmt.Errorf("AppendRecords: error %q is neither ErrLimit nor ErrMalformed", err)
		}
		return nil
	}
	if valid != nil {
		return fmt.Errorf("EncodeBatch accepted a batch that breaks the limits: %v", valid)
	}
	if err := checkFrames(frames, len(items), lim); err != nil {
		return err
	}
	fds := make([]int, len(items))
	for i := range fds {
		fds[i] = 1000 + i
	}
	want := wire.Message{Items: items, FDs: fds, Payload: payload, Flags: flags}

	m, err := decodeFrames(frames, lim, fds)
	if err != nil {
		return fmt.Errorf("message decoder: %v", err)
	}
	if err := messageEqual(want, m); err != nil {
		return fmt.Errorf("message decoder: %v", err)
	}
	m, err = decodeStream(frames, lim, fds, cuts)
	if err != nil {
		return fmt.Errorf("stream decoder: %v", err)
	}
	if err := messageEqual(want, m); err != nil {
		return fmt.Errorf("stream decoder: %v", err)
	}

	rec, err := wire.AppendRecords(nil, items, lim)
	if err != nil {
		return fmt.Errorf("AppendRecords failed where EncodeBatch did not: %v", err)
	}
	back, err := wire.ParseRecords(rec, len(items), lim)
	if err != nil {
		return fmt.Errorf("ParseRecords(AppendRecords(items)): %v", err)
	}
	if err := itemsEqual(items, back); err != nil {
		return fmt.Errorf("ParseRecords(AppendRecords(items)): %v", err)
	}
	return nil
}

// checkFrames checks the frames EncodeBatch made against its contract:
// one HEAD, then DATA frames within the limits whose descriptors add up to
// the items.
func checkFrames(frames []frame, items int, lim wire.Limits) error {
	full := filled(lim)
	total := 0
	for i, fr := range frames {
		h, err := wire.ParseHeader(fr.Data, wire.Limits{MaxFrame: 1 << 24})
		if err != nil {
			return fmt.Errorf("frame %d: %v", i, err)
		}
		want := wire.FrameData
		if i == 0 {
			want = wire.FrameHead
		}
		switch {
		case h.Type != want:
			return fmt.Errorf("frame %d is %s, want %s", i, h.Type, want)
		case int(h.Length)+wire.HeaderLen != len(fr.Data):
			return fmt.Errorf("frame %d of %d bytes says %d", i, len(fr.Data), h.Length)
		case int(h.NFDs) != fr.NFDs:
			return fmt.Errorf("frame %d announces %d descriptors, Frame.NFDs is %d", i, h.NFDs, fr.NFDs)
		case int(h.Length) > full.MaxFrame:
			return fmt.Errorf("%s frame %d has a body of %d bytes, MaxFrame %d", h.Type, i, h.Length, full.MaxFrame)
		case fr.NFDs > full.MaxFDsPerMessage:
			return fmt.Errorf("frame %d carries %d descriptors, MaxFDsPerMessage %d", i, fr.NFDs, full.MaxFDsPerMessage)
		}
		total += fr.NFDs
	}
	if total != items {
		return fmt.Errorf("frames carry %d descriptors for %d items", total, items)
	}
	return nil
}

// decodeStream concatenates frames and cuts them into reads of cuts[i]+1
// bytes (the rest in one read), as a stream socket may deliver them. Like
// the kernel, it attaches each frame's descriptors to the read that holds
// the frame's first byte and ends that read no later than the frame's end
// (recvmsg(2) stops after the data of a sendmsg(2) that carried
// descriptors).
func decodeStream(frames []frame, lim wire.Limits, fds []int, cuts []byte) (wire.Message, error) {
	var stream []byte
	starts := make([]int, len(frames))
	for i, fr := range frames {
		starts[i] = len(stream)
		stream = append(stream, fr.Data...)
	}
	d := wire.NewDecoder(lim, false)
	var msgs []wire.Message
	for pos, fi, ci := 0, 0, 0; pos < len(stream); {
		end := len(stream)
		if ci < len(cuts) {
			end = min(pos+int(cuts[ci])+1, len(stream))
			ci++
		}
		var mine []int
		for ; fi < len(frames) && starts[fi] < end; fi++ {
			if n := frames[fi].NFDs; n > 0 {
				end = min(end, starts[fi]+len(frames[fi].Data))
				mine = append([]int(nil), fds[:n]...)
				fds = fds[n:]
			}
		}
		if err := d.Feed(stream[pos:end], mine); err != nil {
			return wire.Message{}, fmt.Errorf("read [%d,%d) of %d: %w", pos, end, len(stream), err)
		}
		for {
			m, ok := d.Next()
			if !ok {
				break
			}
			msgs = append(msgs, m)
		}
		pos = end
	}
	if len(msgs) != 1 {
		return wire.Message{}, fmt.Errorf("%d messages, want 1", len(msgs))
	}
	if !d.Idle() {
		return wire.Message{}, fmt.Errorf("decoder not idle after the batch")
	}
	return msgs[0], nil
}

// buildItems reads a batch from spec: a count byte (mod 8), then per item a
// kind byte (mod 11, so 0 and 10 are invalid), a name (length byte, bytes),
// a meta count byte (mod 4), per entry a key and a value (length byte,
// bytes each), and a payload (length byte, bytes). Past the end of spec
// everything is zero or empty.
func buildItems(spec []byte) []wire.Item {
	r := reader{spec}
	n := int(r.byte() % 8)
	if n == 0 {
		return nil
	}
	items := make([]wire.Item, n)
	for i := range items {
		it := &items[i]
		it.Kind = kinds.Kind(r.byte() % 11)
		it.Name = string(r.bytes(int(r.byte())))
		if m := int(r.byte() % 4); m > 0 {
			it.Meta = make(wire.Meta, m)
			for j := range it.Meta {
				it.Meta[j].Key = string(r.bytes(int(r.byte())))
				it.Meta[j].Value = string(r.bytes(int(r.byte())))
			}
		}
		if p := r.bytes(int(r.byte())); len(p) > 0 {
			it.Payload = bytes.Clone(p)
		}
	}
	return items
}

// specOf is the inverse of buildItems, for seeds; lengths must fit a byte
// and counts their modulus.
func specOf(items []wire.Item) []byte {
	b := []byte{byte(len(items))}
	str := func(s string) {
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	for _, it := range items {
		b = append(b, byte(it.Kind))
		str(it.Name)
		b = append(b, byte(len(it.Meta)))
		for _, e := range it.Meta {
			str(e.Key)
			str(e.Value)
		}
		str(string(it.Payload))
	}
	return b
}
