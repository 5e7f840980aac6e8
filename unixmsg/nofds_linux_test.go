package unixmsg_test

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/unixmsg"
	"github.com/fdpass/fdpass/unixmsg/wire"
	"golang.org/x/sys/unix"
)

// controlOnly is the limits of a Conn that takes no descriptor.
var controlOnly = unixmsg.Limits{MaxItems: -1, MaxFDsPerMessage: -1, MaxBatchBytes: 4 << 10, MaxFrame: 4 << 10}

// rawPair returns a SOCK_SEQPACKET socketpair: a *unixmsg.Conn with opts on
// one end, the other end's raw descriptor.
func rawPair(t *testing.T, opts *unixmsg.Options) (*unixmsg.Conn, int) {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(sp[0]), "pair")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	c, err := unixmsg.NewConn(nc.(*net.UnixConn), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); unix.Close(sp[1]) })
	return c, sp[1]
}

// TestNoDescriptors: a Conn whose limits allow no descriptor receives
// batches without items, refuses others, and keeps none of the
// descriptors a peer pushes at it; it still sends batches with items
// within its SendLimits.
func TestNoDescriptors(t *testing.T) {
	checkLeaks(t)
	c, raw := rawPair(t, &unixmsg.Options{Limits: controlOnly, SendLimits: unixmsg.DefaultLimits(), NoAck: true})
	peerFile := os.NewFile(uintptr(raw), "peer")
	defer peerFile.Close()
	pc, err := net.FileConn(peerFile)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := unixmsg.NewConn(pc.(*net.UnixConn), &unixmsg.Options{NoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	peer.SetDeadline(time.Now().Add(10 * time.Second))

	// A payload only: received.
	var b unixmsg.Batch
	b.SetPayload([]byte("control"))
	if err := peer.Send(&b); err != nil {
		t.Fatal(err)
	}
	got, err := c.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Payload()) != "control" {
		t.Errorf("payload %q", got.Payload())
	}
	got.Close()

	// This side sends descriptors all the same.
	f := tempFile(t, "x")
	var out unixmsg.Batch
	if err := out.Add("f", f, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(&out); err != nil {
		t.Errorf("Send with SendLimits: %v", err)
	}
	out.Close()
	if in, err := peer.Receive(); err != nil {
		t.Errorf("peer: %v", err)
	} else {
		in.Close()
	}

	// A batch with an item: refused, nothing kept.
	before, err := fd.Count()
	if err != nil {
		t.Fatal(err)
	}
	var bad unixmsg.Batch
	if err := bad.Add("f", f, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := peer.Send(&bad); err != nil {
		t.Fatal(err)
	}
	bad.Close()
	if in, err := c.Receive(); !errors.Is(err, unixmsg.ErrLimit) && !errors.Is(err, unixmsg.ErrControlTruncated) {
		if err == nil {
			in.Close()
		}
		t.Errorf("Receive of a batch with an item: %v, want ErrLimit or ErrControlTruncated", err)
	}
	if n, err := fd.Count(); err != nil || n != before {
		t.Errorf("descriptors: %d before, %d after (%v)", before, n, err)
	}
}

// TestNoDescriptorsRawFlood: descriptors pushed with a frame header that
// announces none, or with garbage, never reach this process's table.
func TestNoDescriptorsRawFlood(t *testing.T) {
	checkLeaks(t)
	c, raw := rawPair(t, &unixmsg.Options{Limits: controlOnly})
	c.SetDeadline(time.Now().Add(10 * time.Second))
	before, err := fd.Count()
	if err != nil {
		t.Fatal(err)
	}
	// 200 duplicates of the peer's own end, with a HEAD frame.
	dups := make([]int, 200)
	for i := range dups {
		if dups[i], err = unix.Dup(raw); err != nil {
			t.Fatal(err)
		}
	}
	head := wire.AppendHeader(nil, wire.Header{Type: wire.FrameHead, Length: wire.HeadLen})
	head = wire.AppendHead(head, wire.Head{Items: 200, Size: 0})
	err = unix.Sendmsg(raw, head, unix.UnixRights(dups...), nil, 0)
	for _, d := range dups {
		unix.Close(d)
	}
	if err != nil {
		t.Fatal(err)
	}
	// With no control buffer the kernel drops the descriptors itself
	// (MSG_CTRUNC): none of them is ever in this process's table.
	if b, err := c.Receive(); !errors.Is(err, unixmsg.ErrControlTruncated) {
		if err == nil {
			b.Close()
		}
		t.Fatalf("Receive: %v, want ErrControlTruncated", err)
	}
	if n, err := fd.Count(); err != nil || n != before {
		t.Errorf("descriptors: %d before, %d after (%v)", before, n, err)
	}
}
