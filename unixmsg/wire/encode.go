package wire

import "github.com/fdpass/fdpass/internal/prefault"

// Frame is one encoded frame in two pieces, to be sent as one message (on
// a stream socket, one sendmsg(2) call's data) of Header then Body, with
// the batch's next NFDs descriptors attached.
type Frame struct {
	// Header is the frame header, HeaderLen bytes.
	Header []byte
	// Body is the frame's body: the head of a HEAD frame, a stretch of the
	// payload and records for a DATA frame.
	Body []byte
	NFDs int
}

// EncodeBatch encodes a batch as its frames: a HEAD frame, then as many
// DATA frames as the payload, records and descriptors need, at most
// lim.MaxFrame body bytes and lim.MaxFDsPerMessage descriptors each. Item
// i travels with the i-th descriptor; payload is the batch's own payload;
// flags is HeadFlagAck or 0.
//
// The payload and records, then the headers, are appended to buf, which
// is returned; each frame's pieces are sub-slices of it, so that a DATA
// frame's body is a stretch of the records rather than a copy (a sender
// keeps buf from batch to batch: on the virtual machines this project runs
// on, memory touched for the first time costs far more than a copy).
func EncodeBatch(buf []byte, items []Item, payload []byte, flags uint32, lim Limits) ([]byte, []Frame, error) {
	lim = lim.WithDefaults()
	if len(payload) > lim.MaxPayload {
		return buf, nil, errf(ErrLimit, "batch payload of %d bytes, limit %d", len(payload), lim.MaxPayload)
	}
	n := len(items)
	size := len(payload) + recordsLen(items)
	if n > max(lim.MaxItems, 0) {
		return buf, nil, errf(ErrLimit, "batch of %d items, limit %d", n, max(lim.MaxItems, 0))
	}
	nframes := 0
	if n > 0 {
		nframes = (n + lim.MaxFDsPerMessage - 1) / lim.MaxFDsPerMessage
	}
	if byBytes := (size + lim.MaxFrame - 1) / lim.MaxFrame; byBytes > nframes {
		nframes = byBytes
	}
	// Sized once, so that the records stay where they are while the
	// headers are appended.
	start := len(buf)
	buf = grow(buf, size+HeaderLen+HeadLen+nframes*HeaderLen)
	buf, err := AppendRecords(append(buf, payload...), items, lim)
	if err != nil {
		return buf[:start], nil, err
	}
	rec := buf[start:len(buf):len(buf)]
	if len(rec) > lim.MaxBatchBytes {
		return buf[:start], nil, errf(ErrLimit, "batch of %d bytes, limit %d", len(rec), lim.MaxBatchBytes)
	}
	// Spread the bytes evenly, so that each frame carries records near
	// the descriptors it carries.
	chunk := 0
	if nframes > 0 {
		chunk = (len(rec) + nframes - 1) / nframes
	}
	frames := make([]Frame, 0, nframes+1)
	off := len(buf)
	buf = AppendHeader(buf, Header{Type: FrameHead, Length: HeadLen})
	buf = AppendHead(buf, Head{Items: uint32(n), Flags: flags, Size: uint64(len(rec)), Payload: uint32(len(payload))})
	frames = append(frames, Frame{Header: buf[off : off+HeaderLen : off+HeaderLen], Body: buf[off+HeaderLen : len(buf) : len(buf)]})
	for j, b, f := 0, 0, 0; j < nframes; j++ {
		be := min(b+chunk, len(rec))
		fe := min(f+lim.MaxFDsPerMessage, n)
		off := len(buf)
		buf = AppendHeader(buf, Header{Type: FrameData, NFDs: uint32(fe - f), Length: uint32(be - b)})
		frames = append(frames, Frame{Header: buf[off:len(buf):len(buf)], Body: rec[b:be:be], NFDs: fe - f})
		b, f = be, fe
	}
	return buf, frames, nil
}

// grow is slices.Grow for a buffer about to be filled: new memory is
// populated at once. It allocates with make, not append: append clears
// the new bytes itself, touching every page one fault at a time (12-15 µs
// each on this project's VMs), where make leaves memory fresh from the
// system as it is (it is zero already; only reused memory is cleared), and
// populating costs 0.7 µs a page.
func grow(b []byte, n int) []byte {
	if n <= cap(b)-len(b) {
		return b
	}
	nb := make([]byte, len(b), len(b)+n)
	prefault.Bytes(nb)
	copy(nb, b)
	return nb
}
