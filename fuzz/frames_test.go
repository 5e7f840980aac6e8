package fuzz_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/fdpass/fdpass/unixmsg/wire"
)

// FuzzParseFrames feeds raw bytes to a wire.Decoder as a peer could
// deliver them: data is cut into reads at the uint16 lengths in reads, and
// read i carries nfds[i] descriptors. Each input runs on a stream decoder
// and a message decoder, with the default limits and with smallLimits.
// The descriptor numbers are fake; the Decoder never closes anything.
//
// Invariants: no panic; every descriptor fed comes back exactly once, in a
// Message or from Drain; every error wraps one of the Decoder's sentinels
// and, once returned, is returned by every later Feed and by Err; every
// decoded batch respects the limits, has one descriptor per item, shares
// no memory with the input and encodes back to itself; and between reads
// the decoder holds no more descriptors than one batch and one read bring.
func FuzzParseFrames(f *testing.F) {
	for _, s := range frameSeeds() {
		if s.add {
			f.Add(s.data, s.reads, s.nfds)
		}
	}
	f.Fuzz(func(t *testing.T, data, reads, nfds []byte) {
		for _, lim := range []wire.Limits{{}, smallLimits} {
			for _, messages := range []bool{false, true} {
				name := fmt.Sprintf("messages=%v small=%v", messages, lim != wire.Limits{})
				if err := decodeAll(data, lengths(reads), nfds, lim, messages); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
			}
		}
	})
}

// decodeAll runs one Decoder over the input and checks the invariants.
func decodeAll(input []byte, lens []int, nfds []byte, lim wire.Limits, messages bool) error {
	// A private copy, scribbled over at the end to prove that no message
	// refers to what was fed.
	data := append([]byte(nil), input...)
	d := wire.NewDecoder(lim, messages)
	var g fakeFDs
	seen := map[int]bool{}
	back := func(where string, fds []int) error {
		for _, n := range fds {
			if n < 1000 || n >= 1000+g.next {
				return fmt.Errorf("%s returned descriptor %d, which was never fed", where, n)
			}
			if seen[n] {
				return fmt.Errorf("%s returned descriptor %d a second time", where, n)
			}
			seen[n] = true
		}
		return nil
	}
	var got, want []wire.Message
	var stop error
	delivered, maxRead := 0, 0
	for i, p := range cut(data, lens) {
		n := 0
		if i < len(nfds) {
			n = int(nfds[i])
		}
		maxRead = max(maxRead, n)
		err := d.Feed(p, g.take(n))
		switch {
		case err != nil && !isAny(err, peerSentinels...):
			return fmt.Errorf("read %d: error %q wraps no sentinel", i, err)
		case stop != nil && err != stop:
			return fmt.Errorf("read %d: after %q, Feed returned %v", i, stop, err)
		case err != d.Err():
			return fmt.Errorf("read %d: Feed returned %v, Err %v", i, err, d.Err())
		}
		stop = err
		for {
			m, ok := d.Next()
			if !ok {
				break
			}
			if err := back("Next", m.FDs); err != nil {
				return err
			}
			if err := checkMessage(m, lim); err != nil {
				return fmt.Errorf("read %d: %v", i, err)
			}
			got = append(got, m)
			want = append(want, copyMessage(m))
			delivered += len(m.FDs)
		}
		// Descriptors are checked against what frames announce in every
		// read: between reads the decoder may hold one batch's worth and
		// those of the one read that holds the start of an unfinished
		// frame, no more. Anything beyond is a peer filling the process's
		// descriptor table without an error.
		if held, bound := g.next-delivered, filled(lim).MaxItems+maxRead; err == nil && held > bound {
			return fmt.Errorf("read %d: decoder holds %d descriptors without an error, bound %d (MaxItems + the largest read)", i, held, bound)
		}
	}
	if err := back("Drain", d.Drain()); err != nil {
		return err
	}
	if len(seen) != g.next {
		return fmt.Errorf("%d descriptors fed, %d came back", g.next, len(seen))
	}
	if rest := d.Drain(); len(rest) != 0 {
		return fmt.Errorf("a second Drain returned %v", rest)
	}
	for i := range data {
		data[i] = 0xa5
	}
	for i := range got {
		if err := messageEqual(want[i], got[i]); err != nil {
			return fmt.Errorf("message %d changed when the input did: %v", i, err)
		}
	}
	return nil
}

// checkMessage checks one decoded message against the limits, and encodes
// a batch back and decodes it again.
func checkMessage(m wire.Message, lim wire.Limits) error {
	if m.Ack != nil {
		if m.Items != nil || m.FDs != nil || m.Payload != nil {
			return fmt.Errorf("ACK message with a batch: %+v", m)
		}
		if len(m.Ack.Reason) > wire.MaxReasonLen {
			return fmt.Errorf("ACK reason of %d bytes", len(m.Ack.Reason))
		}
		return nil
	}
	if len(m.FDs) != len(m.Items) {
		return fmt.Errorf("batch of %d items with %d descriptors", len(m.Items), len(m.FDs))
	}
	if m.Flags&^wire.HeadFlagAck != 0 {
		return fmt.Errorf("batch with flags %#x", m.Flags)
	}
	if err := checkItems(m.Items, m.Payload, lim); err != nil {
		return fmt.Errorf("decoded batch breaks the limits: %v", err)
	}
	// Parse, encode, parse: what was accepted must encode under the same
	// limits and decode to the same batch.
	frames, err := encodeBatch(m.Items, m.Payload, m.Flags, lim)
	if err != nil {
		return fmt.Errorf("decoded batch does not encode back: %v", err)
	}
	again, err := decodeFrames(frames, lim, m.FDs)
	if err != nil {
		return fmt.Errorf("decoded batch, encoded again, does not decode: %v", err)
	}
	return messageEqual(m, again)
}

// decodeFrames decodes frames on a message decoder, each frame carrying its
// share of fds, and returns the one message they must make.
func decodeFrames(frames []frame, lim wire.Limits, fds []int) (wire.Message, error) {
	d := wire.NewDecoder(lim, true)
	for i, fr := range frames {
		if fr.NFDs > len(fds) {
			return wire.Message{}, fmt.Errorf("frame %d of %d wants %d descriptors, %d left", i, len(frames), fr.NFDs, len(fds))
		}
		var mine []int
		if fr.NFDs > 0 {
			mine = append(mine, fds[:fr.NFDs]...)
		}
		fds = fds[fr.NFDs:]
		if err := d.Feed(fr.Data, mine); err != nil {
			return wire.Message{}, fmt.Errorf("frame %d of %d: %w", i, len(frames), err)
		}
		if i < len(frames)-1 {
			if _, ok := d.Next(); ok {
				return wire.Message{}, fmt.Errorf("a message after frame %d of %d", i, len(frames))
			}
		}
	}
	if len(fds) != 0 {
		return wire.Message{}, fmt.Errorf("%d descriptors left over", len(fds))
	}
	m, ok := d.Next()
	if !ok {
		return wire.Message{}, fmt.Errorf("no message from %d frames", len(frames))
	}
	if _, ok := d.Next(); ok {
		return wire.Message{}, fmt.Errorf("more than one message from %d frames", len(frames))
	}
	if !d.Idle() {
		return wire.Message{}, fmt.Errorf("decoder not idle after the batch")
	}
	return m, nil
}

// messageEqual compares two messages; nil and empty slices are equal.
func messageEqual(want, got wire.Message) error {
	if (want.Ack == nil) != (got.Ack == nil) || want.Ack != nil && *want.Ack != *got.Ack {
		return fmt.Errorf("ack %+v, want %+v", got.Ack, want.Ack)
	}
	if want.Flags != got.Flags {
		return fmt.Errorf("flags %#x, want %#x", got.Flags, want.Flags)
	}
	if !bytes.Equal(want.Payload, got.Payload) {
		return fmt.Errorf("payload %q, want %q", got.Payload, want.Payload)
	}
	if len(want.FDs) != len(got.FDs) {
		return fmt.Errorf("descriptors %v, want %v", got.FDs, want.FDs)
	}
	for i := range want.FDs {
		if want.FDs[i] != got.FDs[i] {
			return fmt.Errorf("descriptors %v, want %v", got.FDs, want.FDs)
		}
	}
	return itemsEqual(want.Items, got.Items)
}

// copyMessage returns a deep copy of m.
func copyMessage(m wire.Message) wire.Message {
	c := m
	c.Payload = bytes.Clone(m.Payload)
	c.FDs = append([]int(nil), m.FDs...)
	if m.Ack != nil {
		a := *m.Ack
		c.Ack = &a
	}
	c.Items = make([]wire.Item, len(m.Items))
	for i, it := range m.Items {
		it.Payload = bytes.Clone(it.Payload)
		it.Meta = append(wire.Meta(nil), it.Meta...)
		c.Items[i] = it
	}
	return c
}
