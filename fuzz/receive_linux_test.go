//go:build linux

package fuzz_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/internal/rawsock"
	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg"
	"github.com/fdpass/fdpass/unixmsg/wire"
	"golang.org/x/sys/unix"
)

// Receive configuration bits (cfg[0] of FuzzReceive).
const (
	recvStream     = 1 << iota // SOCK_STREAM instead of SOCK_SEQPACKET
	recvSmall                  // smallLimits instead of the defaults
	recvSkipVerify             // Options.SkipVerify
	recvPassCred               // SO_PASSCRED on the receiver: every message brings SCM_CREDENTIALS
)

// maxSends bounds the messages of one run, so that the receiver's
// acknowledgements always fit in the sender's receive buffer.
const maxSends = 64

// FuzzReceive runs the whole receive path on a real socketpair. data is cut
// into messages at the uint16 lengths in msgs; message i is sent with one
// raw sendmsg(2) carrying the real descriptors that fds[i] picks (see
// pool.pick): /dev/null, a pipe end and a UDP socket, so that declared kinds
// and counts are often wrong. cfg[0] holds the recv* bits. The sender then
// shuts down its writing side, and the receiver calls Receive until it
// fails.
//
// Invariants: every Receive returns an error that says what went wrong
// (a unixmsg sentinel, io.EOF, or the peer going away), never a timeout
// once the peer is done; every batch it returns respects the limits, has
// descriptors of the declared kinds (unless SkipVerify) and is closed; and
// once the run's sockets and descriptors are closed, the process's
// open-descriptor count is what it was before the run.
func FuzzReceive(f *testing.F) {
	for _, s := range receiveSeeds() {
		if s.add {
			f.Add(s.data, s.msgs, s.fds, s.cfg)
		}
	}
	f.Fuzz(func(t *testing.T, data, msgs, fds, cfg []byte) {
		before, err := fd.Count()
		if err != nil {
			t.Fatal(err)
		}
		var c byte
		if len(cfg) > 0 {
			c = cfg[0]
		}
		if err := receiveRun(data, lengths(msgs), fds, c); err != nil {
			t.Fatalf("cfg %#x: %v", c, err)
		}
		after, err := fd.Count()
		if err != nil {
			t.Fatal(err)
		}
		if after != before {
			t.Fatalf("cfg %#x: descriptor leak: %d open before, %d after", c, before, after)
		}
	})
}

// connOf turns the socket s into a unixmsg.Conn; s is consumed.
func connOf(s int, opts *unixmsg.Options) (*unixmsg.Conn, error) {
	f := os.NewFile(uintptr(s), "receiver")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	c, err := unixmsg.NewConn(nc.(*net.UnixConn), opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// pool holds the real descriptors a run sends: what they are, and so which
// declared kinds they pass as.
type pool struct {
	fds   []int
	kinds []kinds.Kind
}

func openPool() (*pool, error) {
	p := &pool{}
	add := func(n int, k kinds.Kind) {
		p.fds = append(p.fds, n)
		p.kinds = append(p.kinds, k)
	}
	null, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("open", err)
	}
	add(null, kinds.File)
	var pp [2]int
	if err := unix.Pipe2(pp[:], unix.O_CLOEXEC); err != nil {
		p.close()
		return nil, os.NewSyscallError("pipe2", err)
	}
	add(pp[0], kinds.File)
	add(pp[1], kinds.File)
	udp, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		p.close()
		return nil, os.NewSyscallError("socket", err)
	}
	add(udp, kinds.UDP)
	return p, nil
}

func (p *pool) close() { fd.CloseAll(p.fds) }

// pick reads a descriptor choice byte: bits 0-2 are how many to send (0-7,
// times 9 if bit 7 is set, so that a message can overflow the receiver's
// control buffer), bits 3-4 where in the pool to start; the pool is walked
// round. The pool is /dev/null, pipe read end, pipe write end, UDP socket,
// so with start 0 the kinds are file, file, file, udp, file, ...
func (p *pool) pick(b byte) []int {
	n := int(b & 7)
	if b&0x80 != 0 {
		n *= 9
	}
	start := int(b>>3) & 3
	fds := make([]int, n)
	for i := range fds {
		fds[i] = p.fds[(start+i)%len(p.fds)]
	}
	return fds
}

func receiveRun(data []byte, lens []int, choice []byte, cfg byte) error {
	p, err := openPool()
	if err != nil {
		return err
	}
	defer p.close()

	typ := unix.SOCK_SEQPACKET
	if cfg&recvStream != 0 {
		typ = unix.SOCK_STREAM
	}
	sp, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socketpair", err)
	}
	sender := sp[0]
	defer unix.Close(sender)
	if cfg&recvPassCred != 0 {
		if err := unix.SetsockoptInt(sp[1], unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
			unix.Close(sp[1])
			return os.NewSyscallError("setsockopt", err)
		}
	}
	opts := &unixmsg.Options{SkipVerify: cfg&recvSkipVerify != 0}
	if cfg&recvSmall != 0 {
		opts.Limits = smallLimits
	}
	conn, err := connOf(sp[1], opts)
	if err != nil {
		return err
	}
	defer conn.Close()

	for i, m := range cut(data, lens) {
		if i == maxSends {
			break
		}
		var oob []byte
		if i < len(choice) {
			if fds := p.pick(choice[i]); len(fds) > 0 {
				oob = unix.UnixRights(fds...)
			}
		}
		// A socket that is full or refuses a message (a seqpacket
		// message larger than the buffer) just ends the sending: what
		// the receiver gets is still fuzzed input.
		if _, err := rawsock.Sendmsg(sender, m, oob, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL); err != nil {
			break
		}
	}
	if err := unix.Shutdown(sender, unix.SHUT_WR); err != nil {
		return os.NewSyscallError("shutdown", err)
	}

	// The peer is done: a receive that is still waiting after this long
	// waits for nothing.
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	for i := 0; ; i++ {
		b, err := conn.Receive()
		if err != nil {
			if !receiveErrorOK(err) {
				return fmt.Errorf("receive %d: unexpected error %v", i, err)
			}
			return nil
		}
		err = checkBatch(b, opts)
		b.Close()
		if err != nil {
			return fmt.Errorf("receive %d: %v", i, err)
		}
	}
}

// fileNameKey is the reserved meta key of a sender's file name
// (unixmsg/PROTOCOL.md).
const fileNameKey = "unixmsg.file-name"

// receiveErrorOK reports whether err is one Receive may return for what a
// peer sent or did.
func receiveErrorOK(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	return isAny(err, peerSentinels...) || isAny(err,
		io.EOF,
		unixmsg.ErrControlTruncated,
		unixmsg.ErrTruncated,
		wire.ErrUnexpectedControl,
		unixmsg.ErrKindMismatch,
		unixmsg.ErrUnexpectedEOF,
		unixmsg.ErrBroken,
		// The peer went away while the receiver acknowledged.
		syscall.EPIPE,
		syscall.ECONNRESET,
	)
}

// checkBatch checks a received batch against the limits and, unless
// verification is off, each descriptor against its declared kind.
func checkBatch(b *unixmsg.Batch, opts *unixmsg.Options) error {
	if err := checkItems(b.Items(), b.Payload(), opts.Limits); err != nil {
		return fmt.Errorf("batch breaks the limits: %v", err)
	}
	for i := range b.Len() {
		if b.Taken(i) {
			return fmt.Errorf("item %d arrived taken", i)
		}
		// A file name that came as the first meta entry is the batch's,
		// not the item's meta.
		if m := b.Item(i).Meta; len(m) > 0 && m[0].Key == fileNameKey {
			return fmt.Errorf("item %d kept its file name in its meta: %v", i, m)
		}
		if opts.SkipVerify {
			continue
		}
		n, err := b.TakeFDAt(i)
		if err != nil {
			return err
		}
		info, err := kinds.Detect(n)
		fd.Close(n)
		if err != nil {
			return fmt.Errorf("item %d: %v", i, err)
		}
		if want := b.Item(i).Kind; info.Kind != want {
			return fmt.Errorf("item %d declared %s arrived as %s", i, want, info.Kind)
		}
	}
	return nil
}

var _ = addSeeds(func() map[string][][]byte {
	m := map[string][][]byte{}
	for _, s := range receiveSeeds() {
		m["FuzzReceive/"+s.name] = [][]byte{s.data, s.msgs, s.fds, s.cfg}
	}
	return m
})

type receiveSeed struct {
	name                 string
	data, msgs, fds, cfg []byte
	add                  bool
}

// fdChoice builds a pool.pick byte.
func fdChoice(n, start int) byte { return byte(n&7 | (start&3)<<3) }

// recvSeed sends each frame as one message with the descriptors choice[i]
// picks (none beyond choice).
func recvSeed(name string, frames []frame, cfg byte, choice ...byte) receiveSeed {
	s := receiveSeed{name: name, cfg: []byte{cfg}, fds: choice}
	for _, fr := range frames {
		s.data = append(s.data, fr.Data...)
		s.msgs = append(s.msgs, putLengths(len(fr.Data))...)
	}
	return s
}

func receiveSeeds() []receiveSeed {
	// The pool from start 0: /dev/null, pipe read end, pipe write end, UDP.
	good := []wire.Item{
		item(kinds.File, "null", ""), item(kinds.File, "pipe-r", "", "fd", "0"),
		item(kinds.File, "pipe-w", "", "fd", "1"), item(kinds.UDP, "udp", "queued bytes"),
	}
	b := encode(good, "", 0, 0, 0)
	bAck := encode(good, "state", wire.HeadFlagAck, 0, 0)
	three := good[:3]
	bSmall := encode(three, "", wire.HeadFlagAck, 64, 2)
	wrongKind := encode([]wire.Item{item(kinds.UDP, "null", "")}, "", wire.HeadFlagAck, 0, 0)
	named := encode([]wire.Item{
		item(kinds.File, "null", "", fileNameKey, "/dev/null", "k", "v"),
		item(kinds.File, "pipe-r", "", "k", "v", fileNameKey, "not first"),
	}, "", wire.HeadFlagAck, 0, 0)
	none := byte(0)
	seeds := []receiveSeed{
		recvSeed("seqpacket-batch", b, 0, none, fdChoice(4, 0)),
		recvSeed("stream-batch", b, recvStream, none, fdChoice(4, 0)),
		recvSeed("seqpacket-batch-ack", bAck, 0, none, fdChoice(4, 0)),
		recvSeed("stream-batch-ack", bAck, recvStream, none, fdChoice(4, 0)),
		recvSeed("two-batches", cat(bAck, b), 0, none, fdChoice(4, 0), none, fdChoice(4, 0)),
		recvSeed("small-limits-batch", bSmall, recvSmall, none, fdChoice(2, 0), fdChoice(1, 2)),
		recvSeed("small-limits-batch-stream", bSmall, recvSmall|recvStream, none, fdChoice(2, 0), fdChoice(1, 2)),
		recvSeed("empty-batch", encode(nil, "", wire.HeadFlagAck, 0, 0), 0),
		recvSeed("ack-where-batch-due", one(ackFrame(wire.StatusOK, "")), 0),
		recvSeed("wrong-kind", wrongKind, 0, none, fdChoice(1, 0)),
		recvSeed("wrong-kind-stream", wrongKind, recvStream, none, fdChoice(1, 0)),
		recvSeed("wrong-kind-skip-verify", wrongKind, recvSkipVerify, none, fdChoice(1, 0)),
		recvSeed("wrong-kind-then-batch", cat(wrongKind, b), 0, none, fdChoice(1, 0), none, fdChoice(4, 0)),
		recvSeed("no-header-with-fds", one(frame{Data: []byte("no header at all")}), 0, fdChoice(3, 1)),
		recvSeed("no-header-with-fds-stream", one(frame{Data: []byte("no header at all")}), recvStream, fdChoice(3, 1)),
		recvSeed("fds-with-head", b, 0, fdChoice(1, 0), fdChoice(4, 0)),
		recvSeed("fds-more-than-announced", b, 0, none, fdChoice(5, 0)),
		recvSeed("fds-more-than-announced-stream", b, recvStream, none, fdChoice(5, 0)),
		recvSeed("fds-fewer-than-announced", b, 0, none, fdChoice(3, 0)),
		recvSeed("fds-fewer-than-announced-stream", b, recvStream, none, fdChoice(3, 0)),
		recvSeed("fds-none", b, 0),
		recvSeed("fds-none-stream", b, recvStream),
		recvSeed("truncated-frame", cat(b[:1], one(frame{Data: b[1].Data[:len(b[1].Data)-5]})), 0, none, fdChoice(4, 0)),
		recvSeed("truncated-frame-stream", cat(b[:1], one(frame{Data: b[1].Data[:len(b[1].Data)-5]})), recvStream, none, fdChoice(4, 0)),
		recvSeed("eof-inside-batch", b[:1], 0),
		recvSeed("oversized-frame-length", cat(b[:1], one(patch(b[1], hdrLength, 0xff, 0xff, 0xff, 0x7f))), recvStream, none, fdChoice(4, 0)),
		recvSeed("oversized-nfds", cat(b[:1], one(patch(b[1], hdrNFDs, 0, 1))), 0, none, fdChoice(4, 0)),
		recvSeed("oversized-head-items", cat(one(patch(b[0], headItems, 0xff, 0xff, 0xff, 0xff)), b[1:]), 0, none, fdChoice(4, 0)),
		recvSeed("oversized-name", cat(b[:1], one(patch(b[1], recNameLen, 0xff, 0xff))), 0, none, fdChoice(4, 0)),
		recvSeed("wrong-magic", cat(one(patch(b[0], 0, 'X')), b[1:]), 0, none, fdChoice(4, 0)),
		recvSeed("wrong-version", cat(b[:1], one(patch(b[1], 4, 9))), 0, none, fdChoice(4, 0)),
		recvSeed("unknown-type", cat(b[:1], one(patch(b[1], hdrType, 7))), 0, none, fdChoice(4, 0)),
		recvSeed("reserved-bytes", cat(b[:1], one(patch(b[1], hdrReserved, 1))), 0, none, fdChoice(4, 0)),
		recvSeed("ctrunc-small-limits", bSmall, recvSmall, none, 0x80|fdChoice(3, 0), fdChoice(1, 2)),
		recvSeed("message-at-max-frame-small-limits", one(frame{Data: rawFrame(wire.FrameData, 0, make([]byte, minFrame))}), recvSmall),
		recvSeed("truncated-message-small-limits", one(frame{Data: rawFrame(wire.FrameData, 0, make([]byte, minFrame+1))}), recvSmall),
		recvSeed("file-name-meta", named, 0, none, fdChoice(2, 0)),
		recvSeed("credentials", b, recvPassCred, none, fdChoice(4, 0)),
		recvSeed("credentials-stream", b, recvPassCred|recvStream, none, fdChoice(4, 0)),
		{name: "zero-length-message", data: nil, msgs: putLengths(0), fds: []byte{none}, cfg: []byte{0}},
		{name: "zero-length-message-with-fds", data: nil, msgs: putLengths(0), fds: []byte{fdChoice(2, 0)}, cfg: []byte{0}},
	}
	// "zero-length" seeds need data to send anything at all: cut stops at
	// the end of the data, so give them a batch after the empty message.
	for i := range seeds {
		if strings.HasPrefix(seeds[i].name, "zero-length") {
			seeds[i].data = append(seeds[i].data, b[0].Data...)
			seeds[i].msgs = append(seeds[i].msgs, putLengths(len(b[0].Data))...)
		}
	}
	seeds[0].add = true
	seeds[1].add = true
	return seeds
}
