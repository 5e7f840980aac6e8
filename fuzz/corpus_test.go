package fuzz_test

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"strings"
	"testing"

	"github.com/fdpass/fdpass/internal/fuzzcorpus"
	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg"
	"github.com/fdpass/fdpass/unixmsg/wire"
)

// The named seed files under testdata/fuzz/<Target>/ are generated from the
// seed lists in this file by
//
//	go test ./fuzz -run '^TestCorpus$' -update-corpus
//
// and TestCorpus checks that they are still what the lists say. Files named
// by a hash are findings of the fuzzer, kept as regression entries.
var updateCorpus = flag.Bool("update-corpus", false, "rewrite the named seed files under testdata/fuzz")

func TestCorpus(t *testing.T) {
	files := map[string][][]byte{}
	for _, s := range frameSeeds() {
		files["FuzzParseFrames/"+s.name] = [][]byte{s.data, s.reads, s.nfds}
	}
	for _, s := range roundTripSeeds() {
		files["FuzzRoundTrip/"+s.name] = [][]byte{s.spec, s.payload, s.cfg}
	}
	for _, s := range controlSeeds() {
		files["FuzzParseControl/"+s.name] = [][]byte{s.oob}
	}
	for _, s := range extraSeeds {
		for name, args := range s() {
			files[name] = args
		}
	}
	fuzzcorpus.Sync(t, files, *updateCorpus)
}

// extraSeeds lets other files (Linux-only ones, say) add seed files: each
// function returns a map from "<Target>/<name>" to the target's arguments.
var extraSeeds []func() map[string][][]byte

func addSeeds(f func() map[string][][]byte) bool {
	extraSeeds = append(extraSeeds, f)
	return true
}

// ---- items and frames for seeds ----

func item(k kinds.Kind, name string, payload string, kv ...string) wire.Item {
	it := wire.Item{Kind: k, Name: name}
	if len(kv) > 0 {
		it.Meta = unixmsg.MetaOf(kv...)
	}
	if payload != "" {
		it.Payload = []byte(payload)
	}
	return it
}

var (
	// An item at every small limit: name 8, two meta entries of 16 bytes,
	// payload 16; 58 bytes of record.
	fullItem = item(kinds.File, "abcdefgh", "0123456789abcdef", "k1", "vvvvvv", "k2", "wwwwww")
	// 34 bytes of record: name 8, payload 16.
	midItem = item(kinds.UDP, "udp-sock", "0123456789abcdef")
)

func pad(n int) string { return strings.Repeat("x", n) }

// encode encodes a batch with the default limits, cut into frames of at
// most maxFrame bytes and maxFDs descriptors (0: defaults). It panics on
// error: seeds are fixed.
func encode(items []wire.Item, payload string, flags uint32, maxFrame, maxFDs int) []frame {
	frames, err := encodeBatch(items, []byte(payload), flags,
		wire.Limits{MaxFrame: maxFrame, MaxFDsPerMessage: maxFDs})
	if err != nil {
		panic(err)
	}
	return frames
}

// rawFrame builds one frame with any header values.
func rawFrame(typ wire.FrameType, nfds uint32, body []byte) []byte {
	b := wire.AppendHeader(nil, wire.Header{Type: typ, NFDs: nfds, Length: uint32(len(body))})
	return append(b, body...)
}

// records encodes items' records as the wire format lays them out, with no
// check at all.
func records(items ...wire.Item) []byte {
	var b []byte
	for _, it := range items {
		b = append(b, byte(it.Kind), 0)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(it.Name)))
		b = binary.LittleEndian.AppendUint16(b, uint16(len(it.Meta)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(it.Payload)))
		b = append(b, it.Name...)
		for _, e := range it.Meta {
			b = binary.LittleEndian.AppendUint16(b, uint16(len(e.Key)))
			b = binary.LittleEndian.AppendUint16(b, uint16(len(e.Value)))
			b = append(b, e.Key...)
			b = append(b, e.Value...)
		}
		b = append(b, it.Payload...)
	}
	return b
}

// rawBatch builds a HEAD frame and one DATA frame for records rec with
// payload, announcing items items and nfds descriptors.
func rawBatch(items uint32, payload string, rec []byte, nfds uint32) []frame {
	head := rawFrame(wire.FrameHead, 0, wire.AppendHead(nil, wire.Head{
		Items: items, Size: uint64(len(payload) + len(rec)), Payload: uint32(len(payload)),
	}))
	data := rawFrame(wire.FrameData, nfds, append([]byte(payload), rec...))
	return []frame{{Data: head}, {Data: data, NFDs: int(nfds)}}
}

func ackFrame(s wire.Status, reason string) frame {
	return frame{Data: rawFrame(wire.FrameAck, 0, wire.AppendAck(nil, wire.Ack{Status: s, Reason: reason}))}
}

// patch returns a copy of frame with b written at off.
func patch(f frame, off int, b ...byte) frame {
	d := bytes.Clone(f.Data)
	copy(d[off:], b)
	return frame{Data: d, NFDs: f.NFDs}
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func cat(fs ...[]frame) []frame {
	var all []frame
	for _, f := range fs {
		all = append(all, f...)
	}
	return all
}

func one(f frame) []frame { return []frame{f} }

// Offsets into a batch's frames, for patches.
const (
	hdrType     = 5
	hdrReserved = 6
	hdrNFDs     = 8
	hdrLength   = 12
	headItems   = wire.HeaderLen + 0
	headFlags   = wire.HeaderLen + 4
	headSize    = wire.HeaderLen + 8
	headPayload = wire.HeaderLen + 16
	headReserve = wire.HeaderLen + 20
	recKind     = wire.HeaderLen + 0 // in a DATA frame without batch payload
	recReserved = wire.HeaderLen + 1
	recNameLen  = wire.HeaderLen + 2
	recMetaN    = wire.HeaderLen + 4
	recPayLen   = wire.HeaderLen + 6
)

// ---- FuzzParseFrames ----

type frameSeed struct {
	name              string
	data, reads, nfds []byte
	add               bool // also an f.Add seed
}

// framesSeed makes a seed that delivers each frame as one read with its
// descriptors; fdDelta[i], where given, is added to frame i's count.
func framesSeed(name string, frames []frame, fdDelta ...int) frameSeed {
	s := frameSeed{name: name}
	for i, fr := range frames {
		s.data = append(s.data, fr.Data...)
		s.reads = append(s.reads, putLengths(len(fr.Data))...)
		n := fr.NFDs
		if i < len(fdDelta) {
			n += fdDelta[i]
		}
		s.nfds = append(s.nfds, byte(n))
	}
	return s
}

func frameSeeds() []frameSeed {
	one1 := []wire.Item{item(kinds.File, "a", "p", "k", "v")}
	two := []wire.Item{item(kinds.TCPListener, "http", "", "addr", ":80"), item(kinds.UDP, "dns", "")}
	batch1 := encode(one1, "", wire.HeadFlagAck, 0, 0)
	batch2 := encode(two, "", 0, 0, 0)
	split := encode([]wire.Item{fullItem, fullItem, midItem}, "", 0, 64, 2)
	at := func(n int) []wire.Item {
		its := make([]wire.Item, n)
		for i := range its {
			its[i] = item(kinds.Other, fmt.Sprint(i), "")
		}
		return its
	}
	seeds := []frameSeed{
		// Each frame type, whole.
		framesSeed("head-data", batch1),
		framesSeed("head-only-empty-batch", encode(nil, "", 0, 0, 0)),
		framesSeed("ack-ok", one(ackFrame(wire.StatusOK, ""))),
		framesSeed("ack-reason", one(ackFrame(wire.StatusKind, "item 0 (\"a\"): kinds: descriptor is udp, declared file"))),
		framesSeed("batch-payload", encode(two, "state", 0, 0, 0)),
		framesSeed("many-data-frames", split),
		framesSeed("batches-and-acks", cat(batch1, one(ackFrame(wire.StatusOK, "")), batch2, encode(nil, "", 0, 0, 0))),

		// Small limits: exactly at each, and one past.
		framesSeed("limit-items-at", encode(at(3), "", 0, 0, 2)),
		framesSeed("limit-items-past", encode(at(4), "", 0, 0, 2)),
		framesSeed("limit-name-at", encode([]wire.Item{item(kinds.File, pad(8), "")}, "", 0, 0, 0)),
		framesSeed("limit-name-past", encode([]wire.Item{item(kinds.File, pad(9), "")}, "", 0, 0, 0)),
		framesSeed("limit-meta-entries-at", encode([]wire.Item{item(kinds.File, "", "", "a", "", "b", "")}, "", 0, 0, 0)),
		framesSeed("limit-meta-entries-past", encode([]wire.Item{item(kinds.File, "", "", "a", "", "b", "", "c", "")}, "", 0, 0, 0)),
		framesSeed("limit-meta-bytes-at", encode([]wire.Item{item(kinds.File, "", "", "key", pad(13))}, "", 0, 0, 0)),
		framesSeed("limit-meta-bytes-past", encode([]wire.Item{item(kinds.File, "", "", "key", pad(14))}, "", 0, 0, 0)),
		framesSeed("limit-payload-at", encode([]wire.Item{item(kinds.File, "", pad(16))}, "", 0, 0, 0)),
		framesSeed("limit-payload-past", encode([]wire.Item{item(kinds.File, "", pad(17))}, "", 0, 0, 0)),
		framesSeed("limit-batch-payload-at", encode(nil, pad(16), 0, 0, 0)),
		framesSeed("limit-batch-payload-past", encode(nil, pad(17), 0, 0, 0)),
		framesSeed("limit-batch-bytes-at", encode([]wire.Item{fullItem, fullItem, midItem}, pad(10), 0, 64, 2)),
		framesSeed("limit-batch-bytes-past", encode([]wire.Item{fullItem, fullItem, midItem}, pad(11), 0, 64, 2)),
		// A DATA frame outside a batch: at the limit it is malformed, past it
		// over the limit.
		framesSeed("limit-frame-at", one(frame{Data: rawFrame(wire.FrameData, 0, make([]byte, minFrame))})),
		framesSeed("limit-frame-past", one(frame{Data: rawFrame(wire.FrameData, 0, make([]byte, minFrame+1))})),
		framesSeed("limit-fds-per-frame-at", encode(at(2), "", 0, 0, 0)),
		framesSeed("limit-fds-per-frame-past", encode(at(3), "", 0, 0, 0)),
		framesSeed("limit-ack-reason-at", one(ackFrame(wire.StatusFailed, pad(wire.MaxReasonLen)))),
		framesSeed("limit-ack-reason-past", one(patch(ackFrame(wire.StatusFailed, pad(wire.MaxReasonLen)), wire.HeaderLen+4, le16(wire.MaxReasonLen+1)...))),
		framesSeed("limit-nfds-header-at", one(patch(batch1[1], hdrNFDs, le32(wire.MaxFDsPerMessage)...))),
		framesSeed("limit-nfds-header-past", one(patch(batch1[1], hdrNFDs, le32(wire.MaxFDsPerMessage+1)...))),

		// The hostile peer of issue 2.
		{name: "no-header-with-fds", data: []byte("descriptors without a header"), nfds: []byte{2}},
		framesSeed("fds-with-ack", one(ackFrame(wire.StatusOK, "")), 1),
		framesSeed("fds-with-head", batch1, 1, 0),
		framesSeed("fds-more-than-announced", batch1, 0, 1),
		framesSeed("fds-fewer-than-announced", batch2, 0, -1),
		framesSeed("fds-none-of-announced", batch2, 0, -2),
		framesSeed("fds-on-later-read", cat(batch2[:1], one(frame{Data: batch2[1].Data}), one(ackFrame(wire.StatusOK, ""))), 0, 0, 2),
		framesSeed("head-announces-fds", one(patch(batch1[0], hdrNFDs, 1)), 1),
		framesSeed("ack-announces-fds", one(patch(ackFrame(wire.StatusOK, ""), hdrNFDs, 1)), 1),
		framesSeed("batch-fds-beyond-items", cat(batch2[:1], one(patch(batch2[1], hdrNFDs, 3))), 0, 1),
		framesSeed("truncated-frame", cat(batch1[:1], one(frame{Data: batch1[1].Data[:len(batch1[1].Data)-3], NFDs: 1}))),
		framesSeed("truncated-header", one(frame{Data: batch1[0].Data[:10]})),
		framesSeed("truncated-head-body", one(frame{Data: batch1[0].Data[:wire.HeaderLen+10]})),
		framesSeed("oversized-frame-length", one(patch(batch1[1], hdrLength, 0xff, 0xff, 0xff, 0xff))),
		framesSeed("oversized-frame-length-default", one(patch(batch1[1], hdrLength, le32(64<<10+1)...))),
		framesSeed("oversized-nfds", one(patch(batch1[1], hdrNFDs, 0xff, 0xff, 0xff, 0xff))),
		framesSeed("oversized-head-items", cat(one(patch(batch1[0], headItems, 0xff, 0xff, 0xff, 0xff)), batch1[1:])),
		framesSeed("oversized-head-size", cat(one(patch(batch1[0], headSize, le64(1<<63)...)), batch1[1:])),
		framesSeed("oversized-head-payload", cat(one(patch(batch1[0], headPayload, 0xff, 0xff, 0xff, 0xff)), batch1[1:])),
		framesSeed("oversized-name", cat(batch1[:1], one(patch(batch1[1], recNameLen, 0xff, 0xff)))),
		framesSeed("oversized-meta-count", cat(batch1[:1], one(patch(batch1[1], recMetaN, 0xff, 0xff)))),
		framesSeed("oversized-meta-key", cat(batch1[:1], one(patch(batch1[1], recPayLen+4+1+0, 0xff, 0xff)))),
		framesSeed("oversized-record-payload", cat(batch1[:1], one(patch(batch1[1], recPayLen, 0xff, 0xff, 0xff, 0xff)))),
		framesSeed("head-size-too-small", cat(one(patch(batch1[0], headSize, le64(9)...)), batch1[1:])),
		framesSeed("wrong-magic", cat(one(patch(batch1[0], 0, 'F', 'D', 'P', 'X')), batch1[1:])),
		framesSeed("wrong-magic-http", one(frame{Data: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")})),
		framesSeed("wrong-version-0", cat(one(patch(batch1[0], 4, 0)), batch1[1:])),
		framesSeed("wrong-version-2", cat(one(patch(batch1[0], 4, 2)), batch1[1:])),
		framesSeed("unknown-type-0", one(patch(ackFrame(wire.StatusOK, ""), hdrType, 0))),
		framesSeed("unknown-type-4", one(patch(ackFrame(wire.StatusOK, ""), hdrType, 4))),
		framesSeed("unknown-type-255", one(patch(ackFrame(wire.StatusOK, ""), hdrType, 255))),
		framesSeed("reserved-header-byte-6", cat(one(patch(batch1[0], hdrReserved, 1)), batch1[1:])),
		framesSeed("reserved-header-byte-7", cat(one(patch(batch1[0], hdrReserved+1, 0x80)), batch1[1:])),
		framesSeed("reserved-head-field", cat(one(patch(batch1[0], headReserve, 1)), batch1[1:])),
		framesSeed("reserved-head-flag", cat(one(patch(batch1[0], headFlags, 2)), batch1[1:])),
		framesSeed("reserved-record-byte", cat(batch1[:1], one(patch(batch1[1], recReserved, 1)))),
		framesSeed("invalid-kind-0", cat(batch1[:1], one(patch(batch1[1], recKind, 0)))),
		framesSeed("invalid-kind-10", cat(batch1[:1], one(patch(batch1[1], recKind, 10)))),
		framesSeed("duplicate-meta-key", rawBatch(1, "", records(item(kinds.File, "f", "", "k", "1", "k", "2")), 1)),
		framesSeed("record-bytes-left-over", rawBatch(1, "", append(records(item(kinds.File, "f", "")), 1, 2, 3), 1)),
		framesSeed("record-cut-short", rawBatch(2, "", append(records(item(kinds.File, "f", "")), make([]byte, 10)...)[:19], 2)),
		framesSeed("data-outside-batch", batch1[1:]),
		framesSeed("head-inside-batch", cat(batch2[:1], batch1)),
		framesSeed("ack-inside-batch", cat(batch2[:1], one(ackFrame(wire.StatusOK, "")), batch2[1:])),
		framesSeed("empty-data-frame", cat(batch2[:1], one(frame{Data: rawFrame(wire.FrameData, 0, nil)}), batch2[1:])),
		framesSeed("data-beyond-size", cat(batch1, one(frame{Data: rawFrame(wire.FrameData, 0, []byte("more"))}))),
		framesSeed("ack-length-mismatch", one(frame{Data: rawFrame(wire.FrameAck, 0, []byte{0, 0, 0, 0, 5, 0, 'a'})})),
		framesSeed("ack-body-short", one(frame{Data: rawFrame(wire.FrameAck, 0, []byte{0, 0, 0})})),
	}
	seeds[0].add = true
	seeds[2].add = true

	// More descriptors than announced, on reads inside a frame that has
	// not ended: one DATA frame announces 1, then five 1-byte reads bring
	// 200 each before the frame is whole.
	big := rawBatch(1, "", records(item(kinds.File, "f", pad(100))), 1)
	hoard := frameSeed{name: "fds-inside-unfinished-frame",
		data:  append(bytes.Clone(big[0].Data), big[1].Data...),
		reads: putLengths(len(big[0].Data), wire.HeaderLen+1, 1, 1, 1, 1, 1),
		nfds:  []byte{0, 1, 200, 200, 200, 200, 200},
	}

	// Stream shapes: reads that do not line up with frames.
	all := append(append([]byte(nil), batch2[0].Data...), batch2[1].Data...)
	seeds = append(seeds,
		frameSeed{name: "stream-byte-at-a-time-head", data: all, reads: putLengths(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, len(all)), nfds: append(make([]byte, 40), 2), add: true},
		frameSeed{name: "stream-fds-with-frame-start", data: all, reads: putLengths(len(batch2[0].Data)+3, len(all)), nfds: []byte{2, 0}},
		frameSeed{name: "stream-one-read", data: all, nfds: []byte{2}},
		frameSeed{name: "fds-on-empty-read", data: all, reads: putLengths(0, len(all)), nfds: []byte{1, 2}},
		frameSeed{name: "message-two-frames-in-one", data: all, reads: putLengths(len(all)), nfds: []byte{2}},
		hoard,
	)
	return seeds
}

// ---- FuzzRoundTrip ----

type roundTripSeed struct {
	name               string
	spec, payload, cfg []byte
	add                bool
}

func roundTripSeeds() []roundTripSeed {
	const ack, small = 1, 2
	s := func(name string, items []wire.Item, payload string, cfg ...byte) roundTripSeed {
		return roundTripSeed{name: name, spec: specOf(items), payload: []byte(payload), cfg: cfg}
	}
	var allKinds []wire.Item
	for k := kinds.TCPListener; k <= kinds.File; k++ {
		allKinds = append(allKinds, item(k, k.String(), "", "k", "v"))
	}
	seeds := []roundTripSeed{
		s("one-item", []wire.Item{item(kinds.File, "a", "p", "k", "v")}, "", ack),
		s("empty-batch", nil, ""),
		s("empty-batch-payload", nil, "batch state"),
		s("kinds-1-to-7", allKinds, "", ack),
		s("kinds-8-9", []wire.Item{item(kinds.NetNS, "ns", ""), item(kinds.Other, "", "x")}, ""),
		s("invalid-kind-0", []wire.Item{item(0, "a", "")}, ""),
		s("invalid-kind-10", []wire.Item{item(10, "a", "")}, ""),
		s("duplicate-meta-key", []wire.Item{item(kinds.File, "a", "", "k", "1", "k", "2")}, ""),
		s("empty-meta-key", []wire.Item{item(kinds.File, "a", "", "", "v")}, ""),
		s("small-at-every-limit", []wire.Item{fullItem, fullItem, midItem}, pad(10), ack|small),
		s("small-past-items", []wire.Item{midItem, midItem, midItem, midItem}, "", small),
		s("small-past-name", []wire.Item{item(kinds.File, pad(9), "")}, "", small),
		s("small-past-meta-entries", []wire.Item{item(kinds.File, "", "", "a", "", "b", "", "c", "")}, "", small),
		s("small-past-meta-bytes", []wire.Item{item(kinds.File, "", "", "key", pad(14))}, "", small),
		s("small-past-payload", []wire.Item{item(kinds.File, "", pad(17))}, "", small),
		s("small-past-batch-payload", nil, pad(17), small),
		s("small-past-batch-bytes", []wire.Item{fullItem, fullItem, midItem}, pad(11), small),
		s("frames-of-one-fd", allKinds, "state", 0, 0, 1),
		s("frames-below-min-frame", allKinds, "state", 0, 1, 3),
		s("frames-of-min-frame", nil, pad(5000), 0, minFrame/16),
		s("frames-of-min-frame-stream", allKinds, pad(5000), ack, minFrame/16, 2, 0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233),
		s("stream-cuts", allKinds, "state", ack, 0, 2, 0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89),
		s("stream-byte-reads", []wire.Item{fullItem, midItem}, "s", small, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
	}
	seeds[0].add = true
	seeds[len(seeds)-3].add = true
	return seeds
}

// ---- FuzzParseControl ----

type controlSeed struct {
	name string
	oob  []byte
	add  bool
}

// cmsg builds one control message as Linux lays it out: a size_t length
// covering header and data, level, type, data, padding to a long.
func cmsg(level, typ int32, data []byte) []byte {
	b := binary.NativeEndian.AppendUint64(nil, uint64(16+len(data)))
	b = binary.NativeEndian.AppendUint32(b, uint32(level))
	b = binary.NativeEndian.AppendUint32(b, uint32(typ))
	b = append(b, data...)
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	return b
}

// Linux values, spelled out so that the seeds build on every platform.
const (
	solSocket      = 1
	scmRights      = 1
	scmCredentials = 2
	solIP          = 0
	ipPktinfo      = 8
)

func ints(v ...int32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.NativeEndian.AppendUint32(b, uint32(x))
	}
	return b
}

func controlSeeds() []controlSeed {
	rights := cmsg(solSocket, scmRights, ints(3, 4, 5))
	creds := cmsg(solSocket, scmCredentials, ints(1234, 0, 0)) // pid, uid, gid
	withLen := func(b []byte, l uint64) []byte {
		b = bytes.Clone(b)
		binary.NativeEndian.PutUint64(b, l)
		return b
	}
	seeds := []controlSeed{
		{name: "rights", oob: rights, add: true},
		{name: "rights-one", oob: cmsg(solSocket, scmRights, ints(7))},
		{name: "rights-253", oob: cmsg(solSocket, scmRights, ints(make([]int32, 253)...))},
		{name: "rights-empty", oob: cmsg(solSocket, scmRights, nil)},
		{name: "rights-negative", oob: cmsg(solSocket, scmRights, ints(-1, -2147483648, 2147483647))},
		{name: "rights-twice", oob: append(bytes.Clone(rights), cmsg(solSocket, scmRights, ints(6))...)},
		{name: "credentials", oob: creds, add: true},
		{name: "rights-then-credentials", oob: append(bytes.Clone(rights), creds...)},
		{name: "credentials-then-rights", oob: append(bytes.Clone(creds), rights...)},
		{name: "other-level", oob: cmsg(solIP, ipPktinfo, make([]byte, 12))},
		{name: "unpadded-last", oob: rights[:16+12]},
		{name: "rights-len-not-multiple-of-4", oob: withLen(cmsg(solSocket, scmRights, ints(3, 4)), 16+7)},
		{name: "len-below-header", oob: withLen(rights, 15)},
		{name: "len-zero", oob: withLen(rights, 0)},
		{name: "len-beyond-buffer", oob: withLen(rights, uint64(len(rights)+1))},
		{name: "len-huge", oob: withLen(rights, 1<<63)},
		{name: "len-max", oob: withLen(rights, ^uint64(0))},
		{name: "malformed-after-rights", oob: append(bytes.Clone(rights), withLen(creds, 3)...)},
		{name: "short-header", oob: rights[:12]},
		{name: "trailing-bytes", oob: append(bytes.Clone(rights), 1, 2, 3)},
		{name: "empty", oob: nil},
	}
	return seeds
}
