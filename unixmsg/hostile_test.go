//go:build linux

package unixmsg_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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

// The hostile peer: raw sendmsg(2) on one end of a socketpair, a
// unixmsg.Conn on the other. Every malformed thing the receiver guards
// against is sent, and each must fail with its sentinel error, answer the
// peer with a refusal where the peer can still hear it, and leave the
// receiver's descriptor count where it was.

var _ = registerChild("hostile-rlimit", hostileRlimitChild)

// hostileTimeout bounds every blocking step, so that a test fails instead of
// hanging.
const hostileTimeout = 10 * time.Second

// hsNoAck marks a case whose peer cannot expect an ACK (it hung up).
const hsNoAck wire.Status = 1<<32 - 1

var hostileSocketTypes = []struct {
	name string
	typ  int
}{
	{"seqpacket", unix.SOCK_SEQPACKET},
	{"stream", unix.SOCK_STREAM},
}

// hostilePeer is the raw end of a socketpair.
type hostilePeer struct {
	typ       int
	f         *os.File
	rc        syscall.RawConn
	rx        *unixmsg.Conn // the Conn on the other end
	closeOnce sync.Once
	closed    bool
}

// newHostilePair returns a raw peer and a Conn (built with opts) on the two
// ends of a socketpair of type typ. passcred sets SO_PASSCRED on the Conn's
// socket before it is used. Both ends have a deadline and are closed when
// the test ends.
func newHostilePair(t *testing.T, typ int, opts *unixmsg.Options, passcred bool) (*hostilePeer, *unixmsg.Conn) {
	t.Helper()
	p, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A non-blocking descriptor goes to the runtime poller, so that the
	// peer's reads and writes obey deadlines too.
	peer := &hostilePeer{typ: typ, f: os.NewFile(uintptr(p[0]), "hostile-peer")}
	t.Cleanup(peer.close)
	rx := fileConn(t, os.NewFile(uintptr(p[1]), "receiver"), opts)
	t.Cleanup(func() { rx.Close() })
	peer.rx = rx
	if passcred {
		rc, err := rx.UnixConn().SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var serr error
		if err := rc.Control(func(s uintptr) {
			serr = unix.SetsockoptInt(int(s), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
		}); err != nil {
			t.Fatal(err)
		}
		if serr != nil {
			t.Fatal(serr)
		}
	}
	if peer.rc, err = peer.f.SyscallConn(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(hostileTimeout)
	if err := peer.f.SetDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	if err := rx.SetDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	return peer, rx
}

func (p *hostilePeer) close() {
	p.closeOnce.Do(func() {
		p.closed = true
		p.f.Close()
	})
}

// sendmsg writes data with the control bytes oob on its first byte; on a
// stream socket a short write is finished without them.
func (p *hostilePeer) sendmsg(data, oob []byte) error {
	sent := 0
	var serr error
	err := p.rc.Write(func(s uintptr) bool {
		for {
			n, err := rawsock.Sendmsg(int(s), data[sent:], oob, unix.MSG_NOSIGNAL)
			switch err {
			case nil:
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			default:
				serr = os.NewSyscallError("sendmsg", err)
				return true
			}
			oob = nil
			sent += n
			if sent >= len(data) {
				return true
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// send writes data with fds attached as SCM_RIGHTS.
func (p *hostilePeer) send(data []byte, fds []int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	return p.sendmsg(data, oob)
}

// sendBatch sends a HEAD frame (asking for an ACK) for items records rec,
// then one DATA frame announcing announce descriptors, with fds attached.
func (p *hostilePeer) sendBatch(rec []byte, items, announce int, fds []int) error {
	if err := p.send(hsHead(items, wire.HeadFlagAck, len(rec)), nil); err != nil {
		return err
	}
	return p.send(hsData(announce, rec), fds)
}

// sendValid sends a well-formed batch of len(fds) items of kind File.
func (p *hostilePeer) sendValid(fds []int) error {
	return p.sendBatch(hsRecords(hsItems(len(fds)), unixmsg.Limits{}), len(fds), len(fds), fds)
}

// recv wraps one recvmsg(2); descriptors that arrive are closed at once and
// only counted.
func (p *hostilePeer) recv(buf, oob []byte) (n, nfds int, err error) {
	var oobn int
	var rerr error
	err = p.rc.Read(func(s uintptr) bool {
		for {
			n, oobn, _, rerr = rawsock.Recvmsg(int(s), buf, oob, unix.MSG_CMSG_CLOEXEC)
			if rerr == unix.EINTR {
				continue
			}
			return rerr != unix.EAGAIN
		}
	})
	if err == nil && rerr != nil {
		err = os.NewSyscallError("recvmsg", rerr)
	}
	if err != nil {
		return 0, 0, err
	}
	if oobn > 0 {
		msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
		if perr != nil {
			return n, 0, perr
		}
		for i := range msgs {
			if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
				continue
			}
			fds, perr := unix.ParseUnixRights(&msgs[i])
			if perr != nil {
				return n, 0, perr
			}
			nfds += len(fds)
			fd.CloseAll(fds)
		}
	}
	return n, nfds, nil
}

// readAck reads one ACK frame, which must come alone and without
// descriptors.
func (p *hostilePeer) readAck() (wire.Ack, error) {
	var got []byte
	buf := make([]byte, 4096)
	oob := make([]byte, 512)
	for {
		if len(got) >= wire.HeaderLen {
			h, err := wire.ParseHeader(got, unixmsg.Limits{})
			if err != nil {
				return wire.Ack{}, err
			}
			if h.Type != wire.FrameAck {
				return wire.Ack{}, fmt.Errorf("got a %s frame, want an ACK", h.Type)
			}
			if end := wire.HeaderLen + int(h.Length); len(got) >= end {
				if len(got) > end {
					return wire.Ack{}, fmt.Errorf("%d bytes after the ACK", len(got)-end)
				}
				return wire.ParseAck(got[wire.HeaderLen:end])
			}
		}
		n, nfds, err := p.recv(buf, oob)
		if err != nil {
			return wire.Ack{}, err
		}
		if nfds > 0 {
			return wire.Ack{}, fmt.Errorf("%d descriptors came with the ACK", nfds)
		}
		if n == 0 {
			return wire.Ack{}, fmt.Errorf("end of connection after %d bytes, before a whole ACK", len(got))
		}
		got = append(got, buf[:n]...)
	}
}

// drain reads total bytes, closing whatever descriptors come with them.
func (p *hostilePeer) drain(total int) error {
	buf := make([]byte, wire.HeaderLen+64<<10)
	oob := make([]byte, unix.CmsgSpace(4*wire.MaxFDsPerMessage)+64)
	for got := 0; got < total; {
		n, _, err := p.recv(buf, oob)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("end of connection after %d of %d bytes", got, total)
		}
		got += n
	}
	return nil
}

// waitDrained polls, up to a deadline, until the Conn's socket holds no
// unread byte: the Conn has read all that was sent so far, so what is sent
// next comes with a later read.
func (p *hostilePeer) waitDrained() error {
	rc, err := p.rx.UnixConn().SyscallConn()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(hostileTimeout)
	for {
		var n int
		var ierr error
		if err := rc.Control(func(s uintptr) { n, ierr = unix.IoctlGetInt(int(s), unix.SIOCINQ) }); err != nil {
			return err
		}
		if ierr != nil {
			return os.NewSyscallError("ioctl SIOCINQ", ierr)
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the receiver left %d bytes unread", n)
		}
		time.Sleep(time.Millisecond)
	}
}

// hostileFDs are descriptors of known kinds for the peer to attach. They
// are the test's and are closed when it ends.
type hostileFDs struct {
	null     []int // /dev/null, a character device: kind File
	file     int   // a regular file
	listener int   // a TCP listener
	unixConn int   // a connected unix stream socket
}

func newHostileFDs(t *testing.T) *hostileFDs {
	t.Helper()
	fx := &hostileFDs{}
	var all []int
	t.Cleanup(func() { fd.CloseAll(all) })
	open := func(path string, flags int) int {
		n, err := unix.Open(path, flags|unix.O_CLOEXEC, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, n)
		return n
	}
	for range 32 {
		fx.null = append(fx.null, open("/dev/null", unix.O_RDWR))
	}
	fx.file = open(filepath.Join(t.TempDir(), "regular"), unix.O_RDWR|unix.O_CREAT)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fx.listener, err = fd.Dup(ln)
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	all = append(all, fx.listener)
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	all = append(all, p[0], p[1])
	fx.unixConn = p[0]
	return fx
}

// Frame builders. Each returns fresh bytes.

func hsHdr(typ wire.FrameType, nfds, length int) []byte {
	return wire.AppendHeader(nil, wire.Header{Type: typ, NFDs: uint32(nfds), Length: uint32(length)})
}

func hsHead(items int, flags uint32, size int) []byte {
	return wire.AppendHead(hsHdr(wire.FrameHead, 0, wire.HeadLen), wire.Head{Items: uint32(items), Flags: flags, Size: uint64(size)})
}

func hsHeadOf(h wire.Head) []byte {
	return wire.AppendHead(hsHdr(wire.FrameHead, 0, wire.HeadLen), h)
}

func hsData(nfds int, rec []byte) []byte {
	return append(hsHdr(wire.FrameData, nfds, len(rec)), rec...)
}

func hsAck(a wire.Ack) []byte {
	body := wire.AppendAck(nil, a)
	return append(hsHdr(wire.FrameAck, 0, len(body)), body...)
}

// hsItems returns n items of kind File named item-0, item-1, ...
func hsItems(n int) []unixmsg.Item {
	items := make([]unixmsg.Item, n)
	for i := range items {
		items[i] = unixmsg.Item{Kind: kinds.File, Name: fmt.Sprintf("item-%d", i)}
	}
	return items
}

// hsRecords encodes items under lim, which may be looser than the
// receiver's; a failure is a bug in the test.
func hsRecords(items []unixmsg.Item, lim unixmsg.Limits) []byte {
	rec, err := wire.AppendRecords(nil, items, lim)
	if err != nil {
		panic(err)
	}
	return rec
}

func hsCat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// hsPatch returns a copy of b with b[i] set to v.
func hsPatch(b []byte, i int, v byte) []byte {
	b = slices.Clone(b)
	b[i] = v
	return b
}

func hsCount(t testing.TB) int {
	t.Helper()
	n, err := fd.Count()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// hostileWant is what one case must produce on one socket type.
type hostileWant struct {
	err    error       // the sentinel Receive's error must match; nil: a batch arrives
	also   error       // a second sentinel it must match too
	items  int         // with err nil: the batch's length
	ack    wire.Status // the status of the ACK the peer must get, or hsNoAck
	usable bool        // with err set: the Conn must still take a valid batch
}

func hsFail(err error, ack wire.Status) hostileWant { return hostileWant{err: err, ack: ack} }

func hsOK(items int) hostileWant {
	return hostileWant{items: items, ack: wire.StatusOK, usable: true}
}

func hsBoth(w hostileWant) map[int]hostileWant {
	return map[int]hostileWant{unix.SOCK_SEQPACKET: w, unix.SOCK_STREAM: w}
}

func hsEach(seq, stream hostileWant) map[int]hostileWant {
	return map[int]hostileWant{unix.SOCK_SEQPACKET: seq, unix.SOCK_STREAM: stream}
}

func hsSeq(w hostileWant) map[int]hostileWant    { return map[int]hostileWant{unix.SOCK_SEQPACKET: w} }
func hsStream(w hostileWant) map[int]hostileWant { return map[int]hostileWant{unix.SOCK_STREAM: w} }

type hostileCase struct {
	name     string
	opts     *unixmsg.Options // the receiver's
	passcred bool
	// send plays the peer; it runs on its own goroutine while the Conn
	// receives.
	send func(p *hostilePeer, fx *hostileFDs) error
	want map[int]hostileWant // by socket type; a type without an entry is skipped
}

const (
	stMalformed  = wire.StatusMalformed
	stLimit      = wire.StatusLimit
	stKind       = wire.StatusKind
	stDescriptor = wire.StatusDescriptor
)

func hostileCases() []hostileCase {
	def := unixmsg.DefaultLimits()
	rec := func(n int) []byte { return hsRecords(hsItems(n), unixmsg.Limits{}) }
	// closeOnStream hangs up after sending on a stream, where the receiver
	// would otherwise wait for the rest of a frame.
	closeOnStream := func(p *hostilePeer) {
		if p.typ == unix.SOCK_STREAM {
			p.close()
		}
	}
	// wrongHeader sends a one-item batch whose DATA frame header has
	// byte i set to v.
	wrongHeader := func(i int, v byte) func(p *hostilePeer, fx *hostileFDs) error {
		return func(p *hostilePeer, fx *hostileFDs) error {
			r := rec(1)
			if err := p.send(hsHead(1, wire.HeadFlagAck, len(r)), nil); err != nil {
				return err
			}
			return p.send(hsPatch(hsData(1, r), i, v), fx.null[:1])
		}
	}
	// oneItem sends a one-item batch whose records are encoded under lim
	// (looser than the receiver's), with one descriptor.
	oneItem := func(it unixmsg.Item, lim unixmsg.Limits) func(p *hostilePeer, fx *hostileFDs) error {
		return func(p *hostilePeer, fx *hostileFDs) error {
			items := []unixmsg.Item{it}
			_, frames, err := wire.EncodeBatch(nil, items, nil, wire.HeadFlagAck, lim)
			if err != nil {
				return err
			}
			fds := fx.null[:1]
			for _, fr := range frames {
				if err := p.send(hsCat(fr.Header, fr.Body), fds[:fr.NFDs]); err != nil {
					return err
				}
				fds = fds[fr.NFDs:]
			}
			return nil
		}
	}
	// mismatch sends one item declared as k with the descriptor pick
	// chooses.
	mismatch := func(k kinds.Kind, pick func(fx *hostileFDs) int) func(p *hostilePeer, fx *hostileFDs) error {
		return func(p *hostilePeer, fx *hostileFDs) error {
			r := hsRecords([]unixmsg.Item{{Kind: k, Name: "liar"}}, unixmsg.Limits{})
			return p.sendBatch(r, 1, 1, []int{pick(fx)})
		}
	}
	// split sends a batch of n items over several DATA frames, frame i
	// carrying fdsFor(i, announced) copies of one descriptor (the kernel
	// gives the receiver a new descriptor for each).
	split := func(n int, fdsFor func(i, announced int) int) func(p *hostilePeer, fx *hostileFDs) error {
		return func(p *hostilePeer, fx *hostileFDs) error {
			_, frames, err := wire.EncodeBatch(nil, hsItems(n), nil, wire.HeadFlagAck, unixmsg.Limits{})
			if err != nil {
				return err
			}
			for i, fr := range frames {
				if err := p.send(hsCat(fr.Header, fr.Body), slices.Repeat([]int{fx.null[0]}, fdsFor(i, fr.NFDs))); err != nil {
					return err
				}
			}
			return nil
		}
	}
	kindWant := hostileWant{err: unixmsg.ErrKindMismatch, also: kinds.ErrMismatch, ack: stKind, usable: true}
	smallFDs := &unixmsg.Options{Limits: unixmsg.Limits{MaxFDsPerMessage: 4}}

	return []hostileCase{
		// Controls: a well-formed batch from the raw peer goes through, so
		// the failures below are the receiver's doing.
		{
			name: "valid batch",
			send: func(p *hostilePeer, fx *hostileFDs) error { return p.sendValid(fx.null[:3]) },
			want: hsBoth(hsOK(3)),
		},
		{
			// On a stream the kernel gives the descriptors with the read
			// that holds HEAD, and DATA starts in that read: accepted.
			name: "HEAD and DATA in one sendmsg",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				r := rec(2)
				return p.send(hsCat(hsHead(2, wire.HeadFlagAck, len(r)), hsData(2, r)), fx.null[:2])
			},
			want: hsEach(hsFail(unixmsg.ErrMalformed, stMalformed), hsOK(2)),
		},
		{
			name: "DATA split over two sendmsg, descriptors with its first byte",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				r := rec(2)
				d := hsData(2, r)
				if err := p.send(hsHead(2, wire.HeadFlagAck, len(r)), nil); err != nil {
					return err
				}
				if err := p.send(d[:8], fx.null[:2]); err != nil {
					return err
				}
				if err := p.waitDrained(); err != nil {
					return err
				}
				return p.send(d[8:], nil)
			},
			want: hsStream(hsOK(2)),
		},

		{
			name: "batch of 600 over three DATA frames",
			send: split(600, func(i, announced int) int { return announced }),
			want: hsBoth(hsOK(600)),
		},

		// Descriptors where no frame is.
		{
			name: "descriptors with bytes that are not a frame",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				return p.send([]byte("this is not a frame, just bytes"), fx.null[:2])
			},
			want: hsBoth(hsFail(unixmsg.ErrBadMagic, stMalformed)),
		},
		{
			name: "descriptors with one byte",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				if err := p.send([]byte{'F'}, fx.null[:2]); err != nil {
					return err
				}
				closeOnStream(p)
				return nil
			},
			want: hsEach(hsFail(unixmsg.ErrMalformed, stMalformed), hsFail(unixmsg.ErrUnexpectedEOF, hsNoAck)),
		},
		{
			// A stream cannot carry descriptors without a byte.
			name: "descriptors with an empty message",
			send: func(p *hostilePeer, fx *hostileFDs) error { return p.send(nil, fx.null[:2]) },
			want: hsSeq(hsFail(unixmsg.ErrUnexpectedFDs, stDescriptor)),
		},
		{
			// An empty message is not the end of the connection: the
			// peer is still there.
			name: "empty message",
			send: func(p *hostilePeer, fx *hostileFDs) error { return p.send(nil, nil) },
			want: hsSeq(hsFail(unixmsg.ErrMalformed, stMalformed)),
		},

		// Announced descriptor counts against what arrived.
		{
			name: "DATA announces more descriptors than attached",
			send: func(p *hostilePeer, fx *hostileFDs) error { return p.sendBatch(rec(3), 3, 3, fx.null[:2]) },
			want: hsBoth(hsFail(unixmsg.ErrMissingFDs, stDescriptor)),
		},
		{
			name: "DATA announces fewer descriptors than attached",
			send: func(p *hostilePeer, fx *hostileFDs) error { return p.sendBatch(rec(1), 1, 1, fx.null[:2]) },
			want: hsBoth(hsFail(unixmsg.ErrUnexpectedFDs, stDescriptor)),
		},
		{
			name: "DATA announces descriptors, none attached",
			send: func(p *hostilePeer, fx *hostileFDs) error { return p.sendBatch(rec(2), 2, 2, nil) },
			want: hsBoth(hsFail(unixmsg.ErrMissingFDs, stDescriptor)),
		},
		{
			name: "DATA announces and carries more descriptors than HEAD items",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				// Records for 3 items, HEAD says 2 (so the records do not
				// fit either), the frame carries 3 descriptors.
				return p.sendBatch(rec(3), 2, 3, fx.null[:3])
			},
			want: hsBoth(hsFail(unixmsg.ErrUnexpectedFDs, stDescriptor)),
		},
		{
			// The 506 descriptors of the first two frames must be closed.
			name: "batch of 600, last DATA frame without its descriptors",
			send: split(600, func(i, announced int) int {
				if i == 3 {
					return 0
				}
				return announced
			}),
			want: hsBoth(hsFail(unixmsg.ErrMissingFDs, stDescriptor)),
		},
		{
			name: "batch of 600, second DATA frame one descriptor short",
			send: split(600, func(i, announced int) int {
				if i == 2 {
					return announced - 1
				}
				return announced
			}),
			want: hsBoth(hsFail(unixmsg.ErrMissingFDs, stDescriptor)),
		},
		{
			name: "DATA announces none, carries descriptors",
			send: func(p *hostilePeer, fx *hostileFDs) error { return p.sendBatch(rec(1), 1, 0, fx.null[:1]) },
			want: hsBoth(hsFail(unixmsg.ErrUnexpectedFDs, stDescriptor)),
		},
		{
			name: "descriptors attached to HEAD",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				r := rec(1)
				if err := p.send(hsHead(1, wire.HeadFlagAck, len(r)), fx.null[:1]); err != nil {
					return err
				}
				return p.send(hsData(1, r), fx.null[1:2])
			},
			want: hsBoth(hsFail(unixmsg.ErrUnexpectedFDs, stDescriptor)),
		},
		{
			name: "HEAD announces descriptors",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				h := hsHead(1, wire.HeadFlagAck, len(rec(1)))
				binary.LittleEndian.PutUint32(h[8:], 1)
				return p.send(h, fx.null[:1])
			},
			want: hsBoth(hsFail(unixmsg.ErrUnexpectedFDs, stDescriptor)),
		},
		{
			name: "descriptors attached to an ACK",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				return p.send(hsAck(wire.Ack{Status: wire.StatusOK}), fx.null[:1])
			},
			want: hsBoth(hsFail(unixmsg.ErrUnexpectedFDs, stDescriptor)),
		},
		{
			// Wait until the receiver has read the frame's first bytes,
			// so that the descriptors come with a later read.
			name: "descriptors after the first byte of their frame",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				r := rec(2)
				d := hsData(2, r)
				if err := p.send(hsCat(hsHead(2, wire.HeadFlagAck, len(r)), d[:8]), nil); err != nil {
					return err
				}
				if err := p.waitDrained(); err != nil {
					return err
				}
				return p.send(d[8:], fx.null[:2])
			},
			want: hsStream(hsFail(unixmsg.ErrMissingFDs, stDescriptor)),
		},

		// Frames out of place.
		{
			name: "DATA outside a batch",
			send: func(p *hostilePeer, fx *hostileFDs) error { return p.send(hsData(1, rec(1)), fx.null[:1]) },
			want: hsBoth(hsFail(unixmsg.ErrMalformed, stMalformed)),
		},
		{
			name: "HEAD inside a batch",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				if err := p.send(hsHead(1, wire.HeadFlagAck, len(rec(1))), nil); err != nil {
					return err
				}
				return p.send(hsHead(1, wire.HeadFlagAck, len(rec(1))), nil)
			},
			want: hsBoth(hsFail(unixmsg.ErrMalformed, stMalformed)),
		},
		{
			name: "ACK where a batch is due",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				return p.send(hsAck(wire.Ack{Status: wire.StatusOK}), nil)
			},
			want: hsBoth(hsFail(unixmsg.ErrMalformed, stMalformed)),
		},
		{
			name: "empty DATA frame",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				if err := p.send(hsHead(1, wire.HeadFlagAck, len(rec(1))), nil); err != nil {
					return err
				}
				return p.send(hsData(0, nil), nil)
			},
			want: hsBoth(hsFail(unixmsg.ErrMalformed, stMalformed)),
		},
		{
			name: "more DATA bytes than HEAD size",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				r := rec(1)
				if err := p.send(hsHead(1, wire.HeadFlagAck, len(r)-1), nil); err != nil {
					return err
				}
				return p.send(hsData(1, r), fx.null[:1])
			},
			want: hsBoth(hsFail(unixmsg.ErrMalformed, stMalformed)),
		},
		{
			name: "record with an invalid kind",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				return p.sendBatch(hsPatch(rec(1), 0, 0), 1, 1, fx.null[:1])
			},
			want: hsBoth(hsFail(unixmsg.ErrMalformed, stMalformed)),
		},
		{
			name: "record with a nonzero reserved byte",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				return p.sendBatch(hsPatch(rec(1), 1, 7), 1, 1, fx.null[:1])
			},
			want: hsBoth(hsFail(unixmsg.ErrMalformed, stMalformed)),
		},

		// Cut short.
		{
			name: "truncated DATA frame, then the peer closes",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				r := rec(2)
				if err := p.send(hsHead(2, wire.HeadFlagAck, len(r)), nil); err != nil {
					return err
				}
				d := hsData(2, r)
				if err := p.send(d[:len(d)-3], fx.null[:2]); err != nil {
					return err
				}
				closeOnStream(p)
				return nil
			},
			want: hsEach(hsFail(unixmsg.ErrMalformed, stMalformed), hsFail(unixmsg.ErrUnexpectedEOF, hsNoAck)),
		},
		{
			name: "header alone, body never sent, then the peer closes",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				if err := p.send(hsHdr(wire.FrameHead, 0, wire.HeadLen), nil); err != nil {
					return err
				}
				closeOnStream(p)
				return nil
			},
			want: hsEach(hsFail(unixmsg.ErrMalformed, stMalformed), hsFail(unixmsg.ErrUnexpectedEOF, hsNoAck)),
		},
		{
			name: "message shorter than a header",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				if err := p.send(hsHdr(wire.FrameHead, 0, wire.HeadLen)[:10], nil); err != nil {
					return err
				}
				closeOnStream(p)
				return nil
			},
			want: hsEach(hsFail(unixmsg.ErrMalformed, stMalformed), hsFail(unixmsg.ErrUnexpectedEOF, hsNoAck)),
		},
		{
			name: "HEAD, then the peer closes",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				if err := p.send(hsHead(1, wire.HeadFlagAck, len(rec(1))), nil); err != nil {
					return err
				}
				p.close()
				return nil
			},
			want: hsBoth(hsFail(unixmsg.ErrUnexpectedEOF, hsNoAck)),
		},
		{
			name: "HEAD and part of DATA with its descriptors, then the peer closes",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				r := rec(3)
				if err := p.send(hsHead(6, wire.HeadFlagAck, 2*len(r)), nil); err != nil {
					return err
				}
				if err := p.send(hsData(3, r), fx.null[:3]); err != nil {
					return err
				}
				p.close()
				return nil
			},
			want: hsBoth(hsFail(unixmsg.ErrUnexpectedEOF, hsNoAck)),
		},

		// Lengths and counts beyond the limits.
		{
			name: "frame length beyond MaxFrame",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				return p.send(hsHdr(wire.FrameData, 1, def.MaxFrame+1), fx.null[:1])
			},
			want: hsBoth(hsFail(unixmsg.ErrLimit, stLimit)),
		},
		{
			name: "frame length 0xffffffff",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				return p.send(wire.AppendHeader(nil, wire.Header{Type: wire.FrameHead, Length: 1<<32 - 1}), nil)
			},
			want: hsBoth(hsFail(unixmsg.ErrLimit, stLimit)),
		},
		{
			// On a message socket the frame does not fit the receive
			// buffer (MSG_TRUNC); on a stream its header is over the limit.
			name: "frame beyond the receiver's MaxFrame, body sent",
			opts: &unixmsg.Options{Limits: unixmsg.Limits{MaxFrame: 4096}},
			send: func(p *hostilePeer, fx *hostileFDs) error {
				items := hsItems(1)
				items[0].Payload = make([]byte, 8000)
				r := hsRecords(items, unixmsg.Limits{})
				if err := p.send(hsHead(1, wire.HeadFlagAck, len(r)), nil); err != nil {
					return err
				}
				return p.send(hsData(1, r), fx.null[:1])
			},
			want: hsEach(hsFail(unixmsg.ErrTruncated, stMalformed), hsFail(unixmsg.ErrLimit, stLimit)),
		},
		{
			name: "DATA announces more than SCM_MAX_FD descriptors",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				r := rec(1)
				if err := p.send(hsHead(1, wire.HeadFlagAck, len(r)), nil); err != nil {
					return err
				}
				return p.send(hsData(wire.MaxFDsPerMessage+1, r), fx.null[:1])
			},
			want: hsBoth(hsFail(unixmsg.ErrLimit, stLimit)),
		},
		{
			name: "HEAD announces more items than MaxItems",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				n := def.MaxItems + 1
				return p.send(hsHead(n, wire.HeadFlagAck, n*wire.RecordLen), nil)
			},
			want: hsBoth(hsFail(unixmsg.ErrLimit, stLimit)),
		},
		{
			name: "HEAD announces more bytes than MaxBatchBytes",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				return p.send(hsHead(1, wire.HeadFlagAck, def.MaxBatchBytes+1), nil)
			},
			want: hsBoth(hsFail(unixmsg.ErrLimit, stLimit)),
		},
		{
			name: "HEAD announces a batch payload beyond MaxPayload",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				n := def.MaxPayload + 1
				return p.send(hsHeadOf(wire.Head{Items: 1, Flags: wire.HeadFlagAck, Size: uint64(n + 64), Payload: uint32(n)}), nil)
			},
			want: hsBoth(hsFail(unixmsg.ErrLimit, stLimit)),
		},
		{
			name: "record name longer than MaxNameLen",
			send: oneItem(unixmsg.Item{Kind: kinds.File, Name: strings.Repeat("n", def.MaxNameLen+1)},
				unixmsg.Limits{MaxNameLen: 2 * def.MaxNameLen}),
			want: hsBoth(hsFail(unixmsg.ErrLimit, stLimit)),
		},
		{
			name: "record with too many meta entries",
			send: func() func(p *hostilePeer, fx *hostileFDs) error {
				var kv []string
				for i := range def.MaxMetaEntries + 1 {
					kv = append(kv, fmt.Sprintf("k%d", i), "v")
				}
				return oneItem(unixmsg.Item{Kind: kinds.File, Name: "x", Meta: unixmsg.MetaOf(kv...)},
					unixmsg.Limits{MaxMetaEntries: 2 * def.MaxMetaEntries})
			}(),
			want: hsBoth(hsFail(unixmsg.ErrLimit, stLimit)),
		},
		{
			name: "record with meta bytes beyond MaxMetaBytes",
			send: oneItem(unixmsg.Item{Kind: kinds.File, Name: "x", Meta: unixmsg.MetaOf("k", strings.Repeat("v", def.MaxMetaBytes))},
				unixmsg.Limits{MaxMetaBytes: 2 * def.MaxMetaBytes}),
			want: hsBoth(hsFail(unixmsg.ErrLimit, stLimit)),
		},
		{
			name: "record payload beyond MaxPayload",
			send: oneItem(unixmsg.Item{Kind: kinds.File, Name: "x", Payload: make([]byte, def.MaxPayload+1)},
				unixmsg.Limits{MaxPayload: 2 * def.MaxPayload}),
			want: hsBoth(hsFail(unixmsg.ErrLimit, stLimit)),
		},

		// Headers that are not this protocol's.
		{name: "wrong magic", send: wrongHeader(0, 'X'), want: hsBoth(hsFail(unixmsg.ErrBadMagic, stMalformed))},
		{name: "version 0", send: wrongHeader(4, 0), want: hsBoth(hsFail(unixmsg.ErrVersion, stMalformed))},
		{name: "version 2", send: wrongHeader(4, wire.Version+1), want: hsBoth(hsFail(unixmsg.ErrVersion, stMalformed))},
		{name: "frame type 0", send: wrongHeader(5, 0), want: hsBoth(hsFail(unixmsg.ErrMalformed, stMalformed))},
		{name: "frame type 4", send: wrongHeader(5, 4), want: hsBoth(hsFail(unixmsg.ErrMalformed, stMalformed))},
		{name: "frame type 255", send: wrongHeader(5, 255), want: hsBoth(hsFail(unixmsg.ErrMalformed, stMalformed))},
		{name: "reserved byte 6", send: wrongHeader(6, 1), want: hsBoth(hsFail(unixmsg.ErrMalformed, stMalformed))},
		{name: "reserved byte 7", send: wrongHeader(7, 0x80), want: hsBoth(hsFail(unixmsg.ErrMalformed, stMalformed))},
		{
			name: "HEAD with unknown flags",
			send: func(p *hostilePeer, fx *hostileFDs) error { return p.send(hsHead(1, 1<<7, len(rec(1))), nil) },
			want: hsBoth(hsFail(unixmsg.ErrMalformed, stMalformed)),
		},
		{
			name: "HEAD with a nonzero reserved field",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				h := hsHead(1, wire.HeadFlagAck, len(rec(1)))
				h[len(h)-1] = 1
				return p.send(h, nil)
			},
			want: hsBoth(hsFail(unixmsg.ErrMalformed, stMalformed)),
		},
		{
			name: "HEAD body shorter than a HEAD",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				h := hsHead(1, wire.HeadFlagAck, len(rec(1)))
				short := hsCat(hsHdr(wire.FrameHead, 0, wire.HeadLen-8), h[wire.HeaderLen:len(h)-8])
				return p.send(short, nil)
			},
			want: hsBoth(hsFail(unixmsg.ErrMalformed, stMalformed)),
		},
		{
			name: "HEAD size too small for its items",
			send: func(p *hostilePeer, fx *hostileFDs) error {
				return p.send(hsHead(4, wire.HeadFlagAck, 4*wire.RecordLen-1), nil)
			},
			want: hsBoth(hsFail(unixmsg.ErrMalformed, stMalformed)),
		},

		// Control messages of another type.
		{
			name:     "SCM_CREDENTIALS with SCM_RIGHTS",
			passcred: true,
			send: func(p *hostilePeer, fx *hostileFDs) error {
				r := rec(2)
				if err := p.send(hsHead(2, wire.HeadFlagAck, len(r)), nil); err != nil {
					return err
				}
				cred := unix.UnixCredentials(&unix.Ucred{Pid: int32(os.Getpid()), Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())})
				return p.sendmsg(hsData(2, r), append(unix.UnixRights(fx.null[:2]...), cred...))
			},
			want: hsBoth(hsFail(unixmsg.ErrUnexpectedControl, stMalformed)),
		},
		{
			// With SO_PASSCRED the kernel adds credentials to every
			// message, whether the sender sent them or not.
			name:     "SO_PASSCRED on the receiver, valid batch",
			passcred: true,
			send:     func(p *hostilePeer, fx *hostileFDs) error { return p.sendValid(fx.null[:2]) },
			want:     hsBoth(hsFail(unixmsg.ErrUnexpectedControl, stMalformed)),
		},

		// Descriptors that are not what their records say.
		{
			name: "regular file declared as a TCP listener",
			send: mismatch(kinds.TCPListener, func(fx *hostileFDs) int { return fx.file }),
			want: hsBoth(kindWant),
		},
		{
			name: "TCP listener declared as a UDP socket",
			send: mismatch(kinds.UDP, func(fx *hostileFDs) int { return fx.listener }),
			want: hsBoth(kindWant),
		},
		{
			name: "TCP listener declared as a TCP conn",
			send: mismatch(kinds.TCPConn, func(fx *hostileFDs) int { return fx.listener }),
			want: hsBoth(kindWant),
		},
		{
			name: "unix socket declared as a file",
			send: mismatch(kinds.File, func(fx *hostileFDs) int { return fx.unixConn }),
			want: hsBoth(kindWant),
		},
		{
			name: "character device declared as a network namespace",
			send: mismatch(kinds.NetNS, func(fx *hostileFDs) int { return fx.null[0] }),
			want: hsBoth(kindWant),
		},

		// MSG_CTRUNC: a control buffer sized for 4 descriptors.
		{
			name: "10 descriptors in one message to a receiver of 4 per message",
			opts: smallFDs,
			send: func(p *hostilePeer, fx *hostileFDs) error { return p.sendBatch(rec(10), 10, 10, fx.null[:10]) },
			want: hsBoth(hsFail(unixmsg.ErrControlTruncated, stDescriptor)),
		},
		{
			name: "30 descriptors in one message to a receiver of 4 per message",
			opts: smallFDs,
			send: func(p *hostilePeer, fx *hostileFDs) error { return p.sendBatch(rec(30), 30, 30, fx.null[:30]) },
			want: hsBoth(hsFail(unixmsg.ErrControlTruncated, stDescriptor)),
		},
	}
}

// TestHostilePeer sends each hostile case from a raw peer to a Conn, over
// SOCK_SEQPACKET and SOCK_STREAM.
func TestHostilePeer(t *testing.T) {
	cases := hostileCases()
	for _, st := range hostileSocketTypes {
		t.Run(st.name, func(t *testing.T) {
			for _, tc := range cases {
				w, ok := tc.want[st.typ]
				if !ok {
					continue
				}
				t.Run(tc.name, func(t *testing.T) { runHostileCase(t, st.typ, tc, w) })
			}
		})
	}
}

func runHostileCase(t *testing.T, typ int, tc hostileCase, w hostileWant) {
	checkLeaks(t)
	fx := newHostileFDs(t)
	peer, rx := newHostilePair(t, typ, tc.opts, tc.passcred)

	before := hsCount(t)
	sent := make(chan error, 1)
	go func() { sent <- tc.send(peer, fx) }()
	b, err := rx.Receive()
	if serr := <-sent; serr != nil {
		t.Errorf("peer: %v", serr)
	}
	after := hsCount(t)
	if peer.closed {
		after++ // the peer's own socket
	}

	if w.err == nil {
		if err != nil {
			t.Fatalf("Receive: %v, want a batch of %d items", err, w.items)
		}
		if b.Len() != w.items {
			t.Errorf("received %d items, want %d", b.Len(), w.items)
		}
		if after != before+b.Len() {
			t.Errorf("%d descriptors open before Receive, %d after a batch of %d", before, after, b.Len())
		}
		b.Close()
	} else {
		if err == nil {
			b.Close()
			t.Fatalf("Receive returned a batch of %d items, want an error matching %q", b.Len(), w.err)
		}
		if !errors.Is(err, w.err) {
			t.Errorf("Receive: %v\nwant an error matching %q", err, w.err)
		}
		if w.also != nil && !errors.Is(err, w.also) {
			t.Errorf("Receive: %v\nwant an error matching %q too", err, w.also)
		}
		if after != before {
			t.Errorf("%d descriptors open before Receive, %d after its error: the receiver kept what it got", before, after)
		}
	}

	if w.ack != hsNoAck {
		// The receiver answers before Receive returns: the ACK is
		// already there or never comes.
		peer.f.SetReadDeadline(time.Now().Add(time.Second))
		a, err := peer.readAck()
		peer.f.SetReadDeadline(time.Now().Add(hostileTimeout))
		switch {
		case err != nil:
			t.Errorf("peer waiting for an ACK with status %s: %v", w.ack, err)
		case a.Status != w.ack:
			t.Errorf("peer got an ACK with status %s (%q), want %s", a.Status, a.Reason, w.ack)
		case w.ack != wire.StatusOK && a.Reason == "":
			t.Errorf("ACK with status %s gives no reason", a.Status)
		}
	}

	if w.err == nil || w.usable {
		// The Conn takes the next batch.
		if err := peer.sendValid(fx.null[:2]); err != nil {
			t.Fatalf("peer: %v", err)
		}
		b, err := rx.Receive()
		if err != nil {
			t.Fatalf("Receive after the case: %v, want the Conn still usable", err)
		}
		if b.Len() != 2 {
			t.Errorf("received %d items, want 2", b.Len())
		}
		b.Close()
		if a, err := peer.readAck(); err != nil || a.Status != wire.StatusOK {
			t.Errorf("ACK of the batch after the case: %+v, %v; want status ok", a, err)
		}
	} else {
		// A stream's next frame boundary is unknown: the Conn gives up.
		if b, err := rx.Receive(); !errors.Is(err, unixmsg.ErrBroken) {
			if err == nil {
				b.Close()
			}
			t.Errorf("Receive after the error: %v, want an error matching %q", err, unixmsg.ErrBroken)
		}
	}
}

// TestHostileJunkAfterBatch: descriptors that come with bytes after a whole
// batch break the next receive, and are closed.
func TestHostileJunkAfterBatch(t *testing.T) {
	for _, st := range hostileSocketTypes {
		t.Run(st.name, func(t *testing.T) {
			checkLeaks(t)
			fx := newHostileFDs(t)
			peer, rx := newHostilePair(t, st.typ, nil, false)
			before := hsCount(t)
			if err := peer.sendValid(fx.null[:1]); err != nil {
				t.Fatal(err)
			}
			if err := peer.send([]byte("junk, and more junk, with descriptors"), fx.null[1:3]); err != nil {
				t.Fatal(err)
			}
			b, err := rx.Receive()
			if err != nil {
				t.Fatalf("Receive of the batch before the junk: %v", err)
			}
			b.Close()
			if a, err := peer.readAck(); err != nil || a.Status != wire.StatusOK {
				t.Errorf("ACK: %+v, %v; want status ok", a, err)
			}
			b, err = rx.Receive()
			if err == nil {
				b.Close()
				t.Fatal("Receive of the junk returned a batch")
			}
			if !errors.Is(err, unixmsg.ErrBadMagic) {
				t.Errorf("Receive of the junk: %v, want an error matching %q", err, unixmsg.ErrBadMagic)
			}
			if after := hsCount(t); after != before {
				t.Errorf("%d descriptors open before, %d after", before, after)
			}
		})
	}
}

// TestHostileRejectReachesSender: when the receiving Conn refuses a batch
// that asked for an ACK, the sending Conn gets ErrRejected (or, when the
// receiver hung up, a send error) and never hangs.
func TestHostileRejectReachesSender(t *testing.T) {
	longNames := &unixmsg.Options{Limits: unixmsg.Limits{MaxNameLen: 4096}}
	cases := []struct {
		name    string
		tx, rx  *unixmsg.Options
		items   int
		nameLen int
		closeRx bool // the receiver closes its Conn after the error
		rxErr   error
		status  wire.Status
	}{
		{"name beyond the receiver's MaxNameLen", longNames, nil, 1, 2000, false, unixmsg.ErrLimit, wire.StatusLimit},
		{"more items than the receiver's MaxItems", nil, &unixmsg.Options{Limits: unixmsg.Limits{MaxItems: 2}}, 3, 8, false, unixmsg.ErrLimit, wire.StatusLimit},
		{"more descriptors per message than the receiver's buffer", nil, &unixmsg.Options{Limits: unixmsg.Limits{MaxFDsPerMessage: 4}}, 30, 8, false, unixmsg.ErrControlTruncated, wire.StatusDescriptor},
		{"receiver closes after the error", longNames, nil, 1, 2000, true, unixmsg.ErrLimit, wire.StatusLimit},
		{"receiver with small limits closes after the error", nil, &unixmsg.Options{Limits: unixmsg.Limits{MaxItems: 2}}, 50, 8, true, unixmsg.ErrLimit, wire.StatusLimit},
	}
	for _, st := range hostileSocketTypes {
		t.Run(st.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					checkLeaks(t)
					a, b := socketPairFiles(t, st.typ)
					tx := fileConn(t, a, c.tx)
					defer tx.Close()
					rx := fileConn(t, b, c.rx)
					defer rx.Close()
					deadline := time.Now().Add(hostileTimeout)
					tx.SetDeadline(deadline)
					rx.SetDeadline(deadline)

					null, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
					if err != nil {
						t.Fatal(err)
					}
					defer unix.Close(null)
					var batch unixmsg.Batch
					defer batch.Close()
					for i := range c.items {
						name := fmt.Sprintf("%0*d", c.nameLen, i)
						if err := batch.AddFD(name, null, nil, nil); err != nil {
							t.Fatal(err)
						}
					}

					before := hsCount(t)
					done := make(chan error, 1)
					go func() { done <- tx.Send(&batch) }()
					got, rerr := rx.Receive()
					after := hsCount(t)
					if c.closeRx {
						rx.Close()
					}
					var serr error
					select {
					case serr = <-done:
					case <-time.After(2 * hostileTimeout):
						t.Fatal("Send still blocked long after the receiver's deadline")
					}

					if rerr == nil {
						got.Close()
						t.Fatalf("Receive returned a batch of %d items, want an error matching %q", got.Len(), c.rxErr)
					}
					if !errors.Is(rerr, c.rxErr) {
						t.Errorf("Receive: %v\nwant an error matching %q", rerr, c.rxErr)
					}
					if after != before {
						t.Errorf("%d descriptors open before Receive, %d after its error", before, after)
					}
					switch {
					case serr == nil:
						t.Errorf("Send returned nil for a batch the receiver refused")
					case errors.Is(serr, os.ErrDeadlineExceeded):
						t.Errorf("Send: %v: it waited for its deadline instead of seeing the refusal", serr)
					case errors.Is(serr, unixmsg.ErrRejected):
						var rej *unixmsg.RejectedError
						if !errors.As(serr, &rej) {
							t.Errorf("Send: %v matches ErrRejected but is no *RejectedError", serr)
						} else if rej.Status != c.status {
							t.Errorf("Send rejected with status %s (%q), want %s", rej.Status, rej.Reason, c.status)
						}
					case !c.closeRx:
						t.Errorf("Send: %v, want an error matching %q", serr, unixmsg.ErrRejected)
					default:
						var op *net.OpError
						if !errors.As(serr, &op) && !errors.Is(serr, io.EOF) && !errors.Is(serr, unixmsg.ErrUnexpectedEOF) {
							t.Errorf("Send: %v, want ErrRejected or a send error", serr)
						}
					}
				})
			}
		})
	}
}

// TestHostileAckFromRawPeer: a raw peer reads a Conn's batch and answers
// with every wrong thing; the sending Conn fails with the right sentinel,
// closes any descriptor it was sent, and never hangs.
func TestHostileAckFromRawPeer(t *testing.T) {
	half := hsAck(wire.Ack{Status: wire.StatusOK})[:10]
	badReason := func() []byte {
		body := binary.LittleEndian.AppendUint32(nil, uint32(wire.StatusOK))
		body = binary.LittleEndian.AppendUint16(body, 10)
		body = append(body, "abc"...)
		return append(hsHdr(wire.FrameAck, 0, len(body)), body...)
	}()
	longReason := func() []byte {
		body := binary.LittleEndian.AppendUint32(nil, uint32(wire.StatusFailed))
		body = binary.LittleEndian.AppendUint16(body, wire.MaxReasonLen+1)
		body = append(body, strings.Repeat("r", wire.MaxReasonLen+1)...)
		return append(hsHdr(wire.FrameAck, 0, len(body)), body...)
	}()
	ackAnnouncing := hsPatch(hsAck(wire.Ack{Status: wire.StatusOK}), 8, 1)
	type reply func(p *hostilePeer, fx *hostileFDs) error
	cases := []struct {
		name        string
		reply       reply
		seq, stream error       // the sentinel Send's error must match; nil: success
		status      wire.Status // with ErrRejected
	}{
		{"acknowledgement", func(p *hostilePeer, fx *hostileFDs) error {
			return p.send(hsAck(wire.Ack{Status: wire.StatusOK}), nil)
		}, nil, nil, 0},
		{"rejection", func(p *hostilePeer, fx *hostileFDs) error {
			return p.send(hsAck(wire.Ack{Status: wire.StatusLimit, Reason: "too much"}), nil)
		}, unixmsg.ErrRejected, unixmsg.ErrRejected, wire.StatusLimit},
		{"rejection with an unknown status", func(p *hostilePeer, fx *hostileFDs) error {
			return p.send(hsAck(wire.Ack{Status: 99, Reason: "?"}), nil)
		}, unixmsg.ErrRejected, unixmsg.ErrRejected, 99},
		{"ACK whose reason is longer than its body", func(p *hostilePeer, fx *hostileFDs) error {
			return p.send(badReason, nil)
		}, unixmsg.ErrMalformed, unixmsg.ErrMalformed, 0},
		{"ACK whose reason is beyond MaxReasonLen", func(p *hostilePeer, fx *hostileFDs) error {
			return p.send(longReason, nil)
		}, unixmsg.ErrLimit, unixmsg.ErrLimit, 0},
		{"ACK carrying descriptors", func(p *hostilePeer, fx *hostileFDs) error {
			return p.send(hsAck(wire.Ack{Status: wire.StatusOK}), fx.null[:2])
		}, unixmsg.ErrUnexpectedFDs, unixmsg.ErrUnexpectedFDs, 0},
		{"ACK announcing descriptors", func(p *hostilePeer, fx *hostileFDs) error {
			return p.send(ackAnnouncing, fx.null[:1])
		}, unixmsg.ErrUnexpectedFDs, unixmsg.ErrUnexpectedFDs, 0},
		{"a batch instead of an ACK", func(p *hostilePeer, fx *hostileFDs) error {
			return p.sendValid(fx.null[:3])
		}, unixmsg.ErrMalformed, unixmsg.ErrMalformed, 0},
		{"bytes that are not a frame, with descriptors", func(p *hostilePeer, fx *hostileFDs) error {
			return p.send([]byte("XXXXXXXXXXXXXXXXXXXXXXXX"), fx.null[:1])
		}, unixmsg.ErrBadMagic, unixmsg.ErrBadMagic, 0},
		{"peer closes without answering", func(p *hostilePeer, fx *hostileFDs) error {
			p.close()
			return nil
		}, io.EOF, io.EOF, 0},
		{"half an ACK, then the peer closes", func(p *hostilePeer, fx *hostileFDs) error {
			if err := p.send(half, nil); err != nil {
				return err
			}
			p.close()
			return nil
		}, unixmsg.ErrMalformed, unixmsg.ErrUnexpectedEOF, 0},
	}
	for _, st := range hostileSocketTypes {
		t.Run(st.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					checkLeaks(t)
					fx := newHostileFDs(t)
					peer, tx := newHostilePair(t, st.typ, nil, false)
					var batch unixmsg.Batch
					defer batch.Close()
					for i := range 3 {
						if err := batch.AddFD(fmt.Sprintf("n%d", i), fx.null[i], unixmsg.MetaOf("k", "v"), nil); err != nil {
							t.Fatal(err)
						}
					}
					encoded, _, err := wire.EncodeBatch(nil, batch.Items(), nil, wire.HeadFlagAck, unixmsg.Limits{})
					if err != nil {
						t.Fatal(err)
					}

					before := hsCount(t)
					done := make(chan error, 1)
					go func() {
						err := peer.drain(len(encoded))
						if err == nil {
							err = c.reply(peer, fx)
						}
						done <- err
					}()
					serr := tx.Send(&batch)
					if perr := <-done; perr != nil {
						t.Errorf("peer: %v", perr)
					}
					after := hsCount(t)
					if peer.closed {
						after++
					}
					want := c.seq
					if st.typ == unix.SOCK_STREAM {
						want = c.stream
					}
					switch {
					case want == nil:
						if serr != nil {
							t.Errorf("Send: %v, want success", serr)
						}
					case serr == nil:
						t.Errorf("Send returned nil, want an error matching %q", want)
					case errors.Is(serr, os.ErrDeadlineExceeded):
						t.Errorf("Send: %v: it waited for its deadline", serr)
					case !errors.Is(serr, want):
						t.Errorf("Send: %v\nwant an error matching %q", serr, want)
					case want == unixmsg.ErrRejected:
						var rej *unixmsg.RejectedError
						if !errors.As(serr, &rej) || rej.Status != c.status {
							t.Errorf("Send: %v, want a rejection with status %s", serr, c.status)
						}
					}
					if after != before {
						t.Errorf("%d descriptors open before Send, %d after: the sender kept what the peer sent it", before, after)
					}
				})
			}
		})
	}
}

// TestHostileRlimitControlTruncated: a receiver out of descriptors
// (RLIMIT_NOFILE) gets MSG_CTRUNC from the kernel. The receiver is a child
// process, which lowers its own limit; it reports by exit status.
func TestHostileRlimitControlTruncated(t *testing.T) {
	for _, st := range hostileSocketTypes {
		t.Run(st.name, func(t *testing.T) {
			checkLeaks(t)
			mine, theirs := socketPairFiles(t, st.typ)
			wait := startChild(t, "hostile-rlimit", nil, theirs)
			theirs.Close()
			tx := fileConn(t, mine, nil)
			defer tx.Close()
			tx.SetDeadline(time.Now().Add(3 * hostileTimeout))

			null, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(null)
			var batch unixmsg.Batch
			defer batch.Close()
			for i := range 200 {
				if err := batch.AddFD(fmt.Sprintf("null-%d", i), null, nil, nil); err != nil {
					t.Fatal(err)
				}
			}
			serr := tx.Send(&batch)
			var rej *unixmsg.RejectedError
			switch {
			case serr == nil:
				t.Errorf("Send returned nil; the child had no room for 200 descriptors")
			case !errors.As(serr, &rej) || !errors.Is(serr, unixmsg.ErrRejected):
				t.Errorf("Send: %v, want an error matching %q", serr, unixmsg.ErrRejected)
			case rej.Status != wire.StatusDescriptor:
				t.Errorf("rejected with status %s (%q), want %s", rej.Status, rej.Reason, wire.StatusDescriptor)
			}
			if werr := wait(); werr != nil {
				t.Errorf("child: %v (its stderr is in the log above)", werr)
			}
		})
	}
}

// hostileRlimitChild receives, on descriptor 3, a batch it has no room for.
func hostileRlimitChild() {
	rx := childConn(nil)
	defer rx.Close()
	rx.SetDeadline(time.Now().Add(3 * hostileTimeout))
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "hostile-rlimit child: "+format+"\n", args...)
		os.Exit(1)
	}
	before, err := fd.Count()
	if err != nil {
		fail("%v", err)
	}
	// The limit caps descriptor numbers, not the count, and this process
	// may have inherited descriptors with high numbers: set it just past
	// the fourth free number, so that a handful of descriptors fit.
	names, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		fail("%v", err)
	}
	open := map[int]bool{}
	for _, e := range names {
		var n int
		if _, err := fmt.Sscan(e.Name(), &n); err == nil {
			open[n] = true
		}
	}
	room, n := 0, 0
	for ; room < 4; n++ {
		if !open[n] {
			room++
		}
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		fail("getrlimit: %v", err)
	}
	low := lim
	low.Cur = uint64(n)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		fail("setrlimit: %v", err)
	}
	b, rerr := rx.Receive()
	after, cerr := fd.Count()
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		fail("setrlimit: %v", err)
	}
	if cerr != nil {
		fail("%v", cerr)
	}
	if rerr == nil {
		fail("Receive returned a batch of %d items with a soft RLIMIT_NOFILE of %d", b.Len(), low.Cur)
	}
	if !errors.Is(rerr, unixmsg.ErrControlTruncated) {
		fail("Receive: %v; want an error matching %q", rerr, unixmsg.ErrControlTruncated)
	}
	if after != before {
		fail("%d descriptors open before Receive, %d after its error", before, after)
	}
}
