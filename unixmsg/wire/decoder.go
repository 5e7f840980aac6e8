package wire

import "github.com/fdpass/fdpass/internal/prefault"

// Message is what a Decoder produces: a whole batch (Ack is nil) or an ACK.
type Message struct {
	// Items and FDs are a batch's items and their descriptors, FDs[i]
	// belonging to Items[i]. The descriptors are the receiver's.
	Items []Item
	FDs   []int
	// Payload is the batch's own payload.
	Payload []byte
	// Flags are the batch's HEAD flags.
	Flags uint32
	// Ack is set when the message is an ACK frame.
	Ack *Ack
}

type fdGroup struct {
	start, end int64 // stream offsets of the read they came with
	fds        []int
}

// Decoder turns what arrives on a socket, reads of bytes each with the
// descriptors that came with it, into messages. It is pure: it makes no
// system call and never closes a descriptor. Whatever it was given and has
// not handed out in a Message, Drain returns, so that the caller can close
// it after an error.
//
// Descriptors are attributed to frames by position. On a stream socket the
// kernel delivers the descriptors of one sendmsg(2) with the read that
// consumes the first byte of that call's data, and a sender starts every
// frame with its own sendmsg(2); so the descriptors a frame announces must
// have come with the read that holds the frame's first byte, and every
// group of descriptors must be claimed by a frame that starts in its read.
// On a message socket each read is exactly one frame.
type Decoder struct {
	lim      Limits
	messages bool
	buf      []byte // input not parsed yet
	off      int64  // stream offset of buf[0]
	in       int64  // stream offset after the last input
	groups   []fdGroup
	inBatch  bool
	head     Head
	rec      []byte // the batch's records so far; its items will point into it
	fds      []int
	out      []Message
	discard  []int
	err      error
}

// maxRecPrealloc bounds what a HEAD makes the decoder allocate ahead of the
// records arriving.
const maxRecPrealloc = 4 << 20

// NewDecoder returns a Decoder that enforces lim. messages says the socket
// keeps message boundaries (SOCK_SEQPACKET or SOCK_DGRAM): each read must
// then hold exactly one frame.
func NewDecoder(lim Limits, messages bool) *Decoder {
	return &Decoder{lim: lim.WithDefaults(), messages: messages}
}

// Feed hands the decoder one read: its bytes and the descriptors that came
// with it. The decoder keeps the descriptors until they leave in a Message
// or through Drain. After an error every later Feed returns it.
func (d *Decoder) Feed(data []byte, fds []int) error {
	if d.err != nil {
		d.discard = append(d.discard, fds...)
		return d.err
	}
	start := d.in
	d.in += int64(len(data))
	if len(fds) > 0 {
		d.groups = append(d.groups, fdGroup{start: start, end: d.in, fds: fds})
		if len(data) == 0 {
			return d.fail(errf(ErrUnexpectedFDs, "%d descriptors arrived with no data", len(fds)))
		}
	}
	if d.messages {
		if len(data) < HeaderLen {
			return d.fail(errf(ErrMalformed, "message of %d bytes is shorter than a frame header", len(data)))
		}
		h, err := ParseHeader(data, d.lim)
		if err != nil {
			return d.fail(err)
		}
		if int(h.Length)+HeaderLen != len(data) {
			return d.fail(errf(ErrMalformed, "message of %d bytes holds a frame of %d", len(data), int(h.Length)+HeaderLen))
		}
	}
	p := data
	if len(d.buf) > 0 {
		d.buf = append(d.buf, data...)
		p = d.buf
	}
	n, err := d.parse(p)
	if err != nil {
		return d.fail(err)
	}
	rest := p[n:]
	switch {
	case len(rest) == 0:
		d.buf = d.buf[:0]
	case len(d.buf) > 0:
		d.buf = append(d.buf[:0], rest...)
	default:
		d.buf = append(d.buf, rest...)
	}
	return nil
}

// parse consumes whole frames from the front of p and returns how many
// bytes it consumed.
func (d *Decoder) parse(p []byte) (int, error) {
	used := 0
	for len(p)-used >= HeaderLen {
		h, err := ParseHeader(p[used:], d.lim)
		if err != nil {
			return used, err
		}
		end := used + HeaderLen + int(h.Length)
		if len(p) < end {
			break
		}
		o := d.off
		if err := d.settle(o); err != nil {
			return used, err
		}
		var fds []int
		if h.NFDs > 0 {
			if len(d.groups) == 0 || d.groups[0].start > o {
				return used, errf(ErrMissingFDs, "%s frame announced %d descriptors, none arrived", h.Type, h.NFDs)
			}
			g := d.groups[0]
			d.groups = d.groups[1:]
			fds = g.fds
			if d.inBatch {
				d.fds = append(d.fds, fds...)
			} else {
				d.discard = append(d.discard, fds...)
			}
			if len(fds) < int(h.NFDs) {
				return used, errf(ErrMissingFDs, "frame announced %d descriptors, %d arrived", h.NFDs, len(fds))
			}
			if len(fds) > int(h.NFDs) {
				return used, errf(ErrUnexpectedFDs, "frame announced %d descriptors, %d arrived", h.NFDs, len(fds))
			}
		}
		if err := d.frame(h, p[used+HeaderLen:end], len(fds)); err != nil {
			return used, err
		}
		d.off += int64(end - used)
		used = end
	}
	if err := d.settle(d.off); err != nil {
		return used, err
	}
	// What is left is the start of one unfinished frame, at d.off. Only
	// the descriptors of a read that holds that start can belong to it:
	// the kernel ends a read after the data of a sendmsg(2) that carried
	// descriptors, so there is at most one such group, and a group that
	// came later, with bytes in the middle of the frame, never will be
	// claimed. Failing now bounds what a peer can make us hold.
	if len(d.groups) > 1 || len(d.groups) == 1 && d.groups[0].start > d.off {
		return used, errf(ErrUnexpectedFDs, "%d descriptors arrived in the middle of a frame", len(d.groups[len(d.groups)-1].fds))
	}
	return used, nil
}

// settle fails on any group of descriptors whose read lies wholly before
// offset o: no frame can claim it any more.
func (d *Decoder) settle(o int64) error {
	if len(d.groups) > 0 && d.groups[0].end <= o {
		return errf(ErrUnexpectedFDs, "%d descriptors arrived with bytes that announced none", len(d.groups[0].fds))
	}
	return nil
}

// frame handles one whole frame whose nfds descriptors are already at the
// end of d.fds.
func (d *Decoder) frame(h Header, body []byte, nfds int) error {
	switch h.Type {
	case FrameHead:
		if d.inBatch {
			return errf(ErrMalformed, "HEAD frame inside a batch")
		}
		head, err := ParseHead(body, d.lim)
		if err != nil {
			return err
		}
		d.inBatch = true
		d.head = head
		// The batch's items will point into its record buffer, so each
		// batch gets a new one: as large as HEAD announces up to
		// maxRecPrealloc, and beyond that grown with what arrives, so
		// that a HEAD alone cannot make the decoder allocate much.
		d.rec = make([]byte, 0, min(head.Size, maxRecPrealloc))
		prefault.Bytes(d.rec)
		d.fds = make([]int, 0, min(head.Items, 1<<12))
	case FrameData:
		if !d.inBatch {
			return errf(ErrMalformed, "DATA frame outside a batch")
		}
		if len(body) == 0 && nfds == 0 {
			return errf(ErrMalformed, "empty DATA frame")
		}
		if len(d.fds) > int(d.head.Items) {
			return errf(ErrUnexpectedFDs, "batch announced %d descriptors, %d arrived", d.head.Items, len(d.fds))
		}
		if uint64(len(d.rec))+uint64(len(body)) > d.head.Size {
			return errf(ErrMalformed, "batch announced %d bytes, more arrived", d.head.Size)
		}
		if len(d.rec)+len(body) > cap(d.rec) && len(d.rec) >= maxRecPrealloc {
			// The sender has made good on maxRecPrealloc bytes: room for
			// the rest at once, rather than doubling (and copying) on.
			d.rec = grow(d.rec, int(d.head.Size)-len(d.rec))
		}
		d.rec = append(d.rec, body...)
	case FrameAck:
		if d.inBatch {
			return errf(ErrMalformed, "ACK frame inside a batch")
		}
		a, err := ParseAck(body)
		if err != nil {
			return err
		}
		d.out = append(d.out, Message{Ack: &a})
		return nil
	}
	if uint64(len(d.rec)) == d.head.Size && len(d.fds) == int(d.head.Items) {
		pl := int(d.head.Payload)
		rec := d.rec
		d.rec = nil
		items, err := parseRecords(rec[pl:], int(d.head.Items), d.lim)
		if err != nil {
			return err
		}
		var payload []byte
		if pl > 0 {
			payload = rec[:pl:pl]
		}
		d.out = append(d.out, Message{Items: items, FDs: d.fds, Payload: payload, Flags: d.head.Flags})
		d.inBatch, d.head, d.fds = false, Head{}, nil
	}
	return nil
}

func (d *Decoder) fail(err error) error {
	d.err = err
	return err
}

// Next returns the next whole message decoded so far. The message's
// descriptors are the caller's from then on.
func (d *Decoder) Next() (Message, bool) {
	if len(d.out) == 0 {
		return Message{}, false
	}
	m := d.out[0]
	d.out[0] = Message{}
	d.out = d.out[1:]
	return m, true
}

// Idle reports whether the decoder holds nothing: no partial frame, no
// batch in progress, no descriptors and no message waiting.
func (d *Decoder) Idle() bool {
	return len(d.buf) == 0 && !d.inBatch && len(d.groups) == 0 && len(d.out) == 0 && len(d.discard) == 0
}

// Expecting returns how many descriptors the batch in progress has
// announced (in its HEAD) that have not arrived yet, or 0 outside a batch.
func (d *Decoder) Expecting() int {
	if !d.inBatch || d.err != nil {
		return 0
	}
	return max(int(d.head.Items)-len(d.fds), 0)
}

// Err returns the error that stopped the decoder, or nil.
func (d *Decoder) Err() error { return d.err }

// Drain returns every descriptor the decoder holds, in messages not taken
// by Next included, and forgets them. The caller closes them.
func (d *Decoder) Drain() []int {
	all := d.discard
	d.discard = nil
	all = append(all, d.fds...)
	d.fds = nil
	for _, g := range d.groups {
		all = append(all, g.fds...)
	}
	d.groups = nil
	for _, m := range d.out {
		all = append(all, m.FDs...)
	}
	d.out = nil
	d.inBatch = false
	return all
}
