//go:build linux

package unixmsg_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg"
	"github.com/fdpass/fdpass/unixmsg/wire"
)

// pair returns a connected pair of Conns closed at the end of the test.
func pair(t *testing.T, opts *unixmsg.Options) (*unixmsg.Conn, *unixmsg.Conn) {
	t.Helper()
	a, b, err := unixmsg.Pair(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// sendAsync sends b on c in a goroutine and returns the error channel.
func sendAsync(c *unixmsg.Conn, b *unixmsg.Batch) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- c.Send(b) }()
	return errc
}

func recvErr(t *testing.T, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("send did not return")
		return nil
	}
}

func tempFile(t *testing.T, content string) *os.File {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "item")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestReceiveDeadlineKeepsConnUsable(t *testing.T) {
	checkLeaks(t)
	a, b := pair(t, nil)
	b.SetDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := b.Receive(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Receive past the deadline = %v, want os.ErrDeadlineExceeded", err)
	}
	// Nothing of a batch had arrived, so the Conn is still good.
	b.SetDeadline(time.Time{})
	var batch unixmsg.Batch
	defer batch.Close()
	if err := batch.Add("f", tempFile(t, "x"), nil, nil); err != nil {
		t.Fatal(err)
	}
	errc := sendAsync(a, &batch)
	got, err := b.Receive()
	if err != nil {
		t.Fatalf("Receive after a timeout: %v", err)
	}
	got.Close()
	if err := recvErr(t, errc); err != nil {
		t.Fatal(err)
	}
}

func TestReceiveContextCancel(t *testing.T) {
	checkLeaks(t)
	_, b := pair(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := b.ReceiveContext(ctx)
		errc <- err
	}()
	cancel()
	if err := recvErr(t, errc); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReceiveContext after cancel = %v, want context.Canceled", err)
	}
}

func TestSendContextCancelWhileAwaitingAck(t *testing.T) {
	checkLeaks(t)
	a, _ := pair(t, nil) // nobody receives, so no acknowledgement comes
	var batch unixmsg.Batch
	defer batch.Close()
	if err := batch.Add("f", tempFile(t, "x"), nil, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := a.SendContext(ctx, &batch); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SendContext = %v, want context.DeadlineExceeded", err)
	}
}

func TestKindMismatchRejectedOnBothSides(t *testing.T) {
	checkLeaks(t)
	a, b := pair(t, nil)
	// A sender that lies about a kind: a file declared as a TCP listener.
	// Batch.Add detects kinds, so lie on the wire by hand: encode a batch
	// whose record says TCP listener and attach a file.
	f := tempFile(t, "not a socket")
	var lie unixmsg.Batch
	defer lie.Close()
	if err := lie.Add("ln", f, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := lie.Item(0).Kind; got != kinds.File {
		t.Fatalf("Add detected %s, want file", got)
	}
	errc := sendLying(t, a, f, kinds.TCPListener)
	_, err := b.Receive()
	if !errors.Is(err, unixmsg.ErrKindMismatch) || !errors.Is(err, kinds.ErrMismatch) {
		t.Fatalf("Receive = %v, want ErrKindMismatch and kinds.ErrMismatch", err)
	}
	ack := recvErr(t, errc)
	var rej *unixmsg.RejectedError
	if !errors.As(ack, &rej) || rej.Status != wire.StatusKind {
		t.Fatalf("sender got %v, want a RejectedError with status kind", ack)
	}
	// The batch was refused whole; the Conn goes on.
	var ok unixmsg.Batch
	defer ok.Close()
	if err := ok.Add("f", f, nil, nil); err != nil {
		t.Fatal(err)
	}
	errc = sendAsync(a, &ok)
	got, err := b.Receive()
	if err != nil {
		t.Fatalf("Receive after a refused batch: %v", err)
	}
	got.Close()
	if err := recvErr(t, errc); err != nil {
		t.Fatal(err)
	}
}

// sendLying writes, on a's socket, a batch of one item declared as kind k
// that carries f's descriptor, and waits for the receiver's ACK frame.
func sendLying(t *testing.T, a *unixmsg.Conn, f *os.File, k kinds.Kind) <-chan error {
	t.Helper()
	_, frames, err := wire.EncodeBatch(nil, []unixmsg.Item{{Kind: k, Name: "ln"}}, nil, wire.HeadFlagAck, unixmsg.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := a.UnixConn().SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for _, fr := range frames {
		var oob []byte
		if fr.NFDs > 0 {
			oob = syscall.UnixRights(int(f.Fd()))
		}
		var serr error
		rc.Write(func(s uintptr) bool {
			serr = syscall.Sendmsg(int(s), hsCat(fr.Header, fr.Body), oob, nil, 0)
			return serr != syscall.EAGAIN
		})
		if serr != nil {
			t.Fatal(serr)
		}
	}
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 2048)
		var n int
		var rerr error
		rc.Read(func(s uintptr) bool {
			n, rerr = syscall.Read(int(s), buf)
			return rerr != syscall.EAGAIN
		})
		if rerr != nil {
			errc <- rerr
			return
		}
		d := wire.NewDecoder(unixmsg.Limits{}, true)
		if err := d.Feed(buf[:n], nil); err != nil {
			errc <- err
			return
		}
		m, ok := d.Next()
		if !ok || m.Ack == nil {
			errc <- errors.New("no ACK frame")
			return
		}
		if m.Ack.Status != wire.StatusOK {
			errc <- &unixmsg.RejectedError{Status: m.Ack.Status, Reason: m.Ack.Reason}
			return
		}
		errc <- nil
	}()
	return errc
}

func TestEOF(t *testing.T) {
	checkLeaks(t)
	a, b := pair(t, nil)
	a.Close()
	if _, err := b.Receive(); err != io.EOF {
		t.Fatalf("Receive after the peer closed = %v, want io.EOF", err)
	}
	if _, err := b.Receive(); err == nil {
		t.Fatal("second Receive after EOF succeeded")
	}
}

func TestClosedConn(t *testing.T) {
	checkLeaks(t)
	a, _ := pair(t, nil)
	a.Close()
	var batch unixmsg.Batch
	if err := a.Send(&batch); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Send on a closed Conn = %v, want net.ErrClosed", err)
	}
	if _, err := a.Receive(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Receive on a closed Conn = %v, want net.ErrClosed", err)
	}
}

func TestNoAck(t *testing.T) {
	checkLeaks(t)
	a, b := pair(t, &unixmsg.Options{NoAck: true})
	var batch unixmsg.Batch
	defer batch.Close()
	if err := batch.Add("f", tempFile(t, "x"), nil, nil); err != nil {
		t.Fatal(err)
	}
	// With NoAck, Send returns once written, with no receiver running.
	if err := a.Send(&batch); err != nil {
		t.Fatal(err)
	}
	got, err := b.Receive()
	if err != nil {
		t.Fatal(err)
	}
	got.Close()
}

// TestAddBorrowed: a borrowed item sends the value's own descriptor; the
// batch never closes it (the value stays usable after the batch closes),
// taking it gives a duplicate, and the receiver gets the same socket.
func TestAddBorrowed(t *testing.T) {
	checkLeaks(t)
	a, b := pair(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f := tempFile(t, "lent")
	var batch unixmsg.Batch
	if err := batch.AddBorrowed("ln", ln.(*net.TCPListener), nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := batch.AddBorrowed("f", f, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := batch.Add("own", f, nil, nil); err != nil {
		t.Fatal(err)
	}
	if k := batch.Item(0).Kind; k != kinds.TCPListener {
		t.Errorf("borrowed listener is a %s", k)
	}
	if k := batch.Item(1).Kind; k != kinds.File {
		t.Errorf("borrowed file is a %s", k)
	}
	errc := sendAsync(a, &batch)
	got, err := b.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if err := recvErr(t, errc); err != nil {
		t.Fatal(err)
	}
	lnID, _ := fd.Identify(mustFD(t, ln.(*net.TCPListener)))
	rfd, err := got.TakeFD("ln")
	if err != nil {
		t.Fatal(err)
	}
	if id, err := fd.Identify(rfd); err != nil || id != lnID {
		t.Errorf("received listener %v, want %v (%v)", id, lnID, err)
	}
	fd.Close(rfd)
	got.Close()
	// Taking a borrowed item gives a duplicate; closing the batch leaves
	// the values open.
	dup, err := batch.TakeFD("f")
	if err != nil {
		t.Fatal(err)
	}
	fd.Close(dup)
	batch.Close()
	if _, err := f.Stat(); err != nil {
		t.Errorf("lent file after the batch closed: %v", err)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("lent listener after the batch closed: %v", err)
	}
	c.Close()
}

// mustFD returns the descriptor behind v, valid while v is open.
func mustFD(t *testing.T, v syscall.Conn) int {
	t.Helper()
	rc, err := v.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n := -1
	rc.Control(func(s uintptr) { n = int(s) })
	return n
}

// TestSendNoAck: on a Conn that asks for acknowledgements, SendNoAck
// returns with no receiver running, the batch may be closed at once, and
// the receiver does not acknowledge it (else the next Send would take that
// acknowledgement for its own).
func TestSendNoAck(t *testing.T) {
	checkLeaks(t)
	a, b := pair(t, nil)
	var first, second unixmsg.Batch
	defer second.Close()
	if err := first.Add("f", tempFile(t, "one"), nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := second.Add("f", tempFile(t, "two"), nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.SendNoAck(context.Background(), &first); err != nil {
		t.Fatal(err)
	}
	first.Close()
	errc := sendAsync(a, &second)
	for _, want := range []string{"one", "two"} {
		got, err := b.Receive()
		if err != nil {
			t.Fatal(err)
		}
		f, err := got.File("f")
		got.Close()
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 8)
		n, _ := f.ReadAt(buf, 0)
		f.Close()
		if string(buf[:n]) != want {
			t.Fatalf("received %q, want %q", buf[:n], want)
		}
		if want == "one" {
			select {
			case err := <-errc:
				t.Fatalf("Send returned %v before its batch was received", err)
			default:
			}
		}
	}
	if err := recvErr(t, errc); err != nil {
		t.Fatalf("Send after SendNoAck: %v", err)
	}
}

func TestSendTakenItem(t *testing.T) {
	checkLeaks(t)
	a, _ := pair(t, nil)
	var batch unixmsg.Batch
	defer batch.Close()
	if err := batch.Add("f", tempFile(t, "x"), nil, nil); err != nil {
		t.Fatal(err)
	}
	f, err := batch.File("f")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := a.Send(&batch); !errors.Is(err, unixmsg.ErrTaken) {
		t.Fatalf("Send of a batch with a taken item = %v, want ErrTaken", err)
	}
}

func TestSendOverLimitSendsNothing(t *testing.T) {
	checkLeaks(t)
	a, b := pair(t, &unixmsg.Options{Limits: unixmsg.Limits{MaxNameLen: 4}})
	var batch unixmsg.Batch
	defer batch.Close()
	if err := batch.Add("too-long", tempFile(t, "x"), nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Send(&batch); !errors.Is(err, unixmsg.ErrLimit) {
		t.Fatalf("Send = %v, want ErrLimit", err)
	}
	// Nothing went out: the Conn still works.
	b.SetDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := b.Receive(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Receive = %v, want a timeout: nothing should have been sent", err)
	}
}

func TestBatchTakers(t *testing.T) {
	checkLeaks(t)
	a, b := pair(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	var batch unixmsg.Batch
	defer batch.Close()
	meta := unixmsg.MetaOf("addr", ln.Addr().String(), "role", "http")
	if err := batch.Add("tcp", ln, meta, []byte("state")); err != nil {
		t.Fatal(err)
	}
	if err := batch.Add("udp", udp, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := batch.Add("tcp", udp, nil, nil); !errors.Is(err, unixmsg.ErrDuplicateName) {
		t.Fatalf("Add of a duplicate name = %v, want ErrDuplicateName", err)
	}
	if err := batch.Add("", tempFile(t, "anon"), nil, nil); err != nil {
		t.Fatal(err)
	}
	batch.SetPayload([]byte("batch state"))
	errc := sendAsync(a, &batch)
	got, err := b.Receive()
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if err := recvErr(t, errc); err != nil {
		t.Fatal(err)
	}
	if string(got.Payload()) != "batch state" {
		t.Errorf("batch payload = %q", got.Payload())
	}
	i, err := got.Lookup("tcp")
	if err != nil {
		t.Fatal(err)
	}
	it := got.Item(i)
	if it.Kind != kinds.TCPListener || it.Meta.Value("addr") != ln.Addr().String() || it.Meta.Value("role") != "http" || string(it.Payload) != "state" {
		t.Errorf("item = %+v", it)
	}
	if _, err := got.PacketConn("tcp"); !errors.Is(err, unixmsg.ErrWrongKind) {
		t.Errorf("PacketConn of a listener = %v, want ErrWrongKind", err)
	}
	if _, err := got.Listener("nope"); !errors.Is(err, unixmsg.ErrNotFound) {
		t.Errorf("Listener of a missing name = %v, want ErrNotFound", err)
	}
	if _, err := got.Lookup(""); !errors.Is(err, unixmsg.ErrNotFound) {
		t.Errorf("Lookup of the empty name = %v, want ErrNotFound", err)
	}
	l2, err := got.Listener("tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if _, err := got.Listener("tcp"); !errors.Is(err, unixmsg.ErrTaken) {
		t.Errorf("second Listener = %v, want ErrTaken", err)
	}
	if !got.Taken(i) {
		t.Error("Taken = false after Listener")
	}
	pc, err := got.PacketConn("udp")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	// The received listener accepts a connection made to the original.
	done := make(chan error, 1)
	go func() {
		c, err := l2.Accept()
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Either copy may accept; close the original's side to let ours win.
	ln.Close()
	if err := recvErr(t, done); err != nil {
		t.Fatal(err)
	}
	// The anonymous item is reached by index.
	f, err := got.TakeFDAt(2)
	if err != nil {
		t.Fatal(err)
	}
	os.NewFile(uintptr(f), "anon").Close()
}

func TestCancelKeepsCallersDeadline(t *testing.T) {
	checkLeaks(t)
	_, b := pair(t, nil)
	b.SetDeadline(time.Now().Add(300 * time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.ReceiveContext(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReceiveContext = %v, want context.Canceled", err)
	}
	// The deadline set before must still hold: this Receive must time out
	// instead of waiting for ever.
	errc := make(chan error, 1)
	go func() {
		_, err := b.Receive()
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Receive = %v, want os.ErrDeadlineExceeded", err)
		}
	case <-time.After(5 * time.Second):
		b.SetDeadline(time.Now()) // unblock it
		<-errc
		t.Fatal("the caller's deadline was lost after a cancelled context")
	}
}

// TestStreamDescriptorFlood: a stream peer that opens a frame and then
// sends descriptors with every byte of it must be stopped at the first
// such read, not when the frame completes (which it never does).
func TestStreamDescriptorFlood(t *testing.T) {
	checkLeaks(t)
	mine, theirs := socketPairFiles(t, syscall.SOCK_STREAM)
	defer theirs.Close()
	rx := fileConn(t, mine, nil)
	defer rx.Close()
	null, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	rights := make([]int, wire.MaxFDsPerMessage)
	for i := range rights {
		rights[i] = int(null.Fd())
	}
	before, err := fd.Count()
	if err != nil {
		t.Fatal(err)
	}
	frame := wire.AppendHeader(nil, wire.Header{Type: wire.FrameHead, Length: wire.HeadLen})
	frame = wire.AppendHead(frame, wire.Head{Items: 1, Size: 200})
	frame = wire.AppendHeader(frame, wire.Header{Type: wire.FrameData, NFDs: 1, Length: 200})
	if err := syscall.Sendmsg(int(theirs.Fd()), frame, syscall.UnixRights(int(null.Fd())), nil, 0); err != nil {
		t.Fatal(err)
	}
	peak := 0
	errc := make(chan error, 1)
	go func() {
		rx.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := rx.Receive()
		errc <- err
	}()
	for range 30 {
		if err := syscall.Sendmsg(int(theirs.Fd()), []byte{0}, syscall.UnixRights(rights...), nil, 0); err != nil {
			break // the receiver gave up and closed: good
		}
		if n, err := fd.Count(); err == nil {
			peak = max(peak, n-before)
		}
	}
	err = recvErr(t, errc)
	if !errors.Is(err, unixmsg.ErrUnexpectedFDs) {
		t.Fatalf("Receive = %v, want ErrUnexpectedFDs", err)
	}
	if peak > 4*wire.MaxFDsPerMessage {
		t.Errorf("the receiver held up to %d descriptors from the flood", peak)
	}
}

// TestBatchGrow: Grow makes room without adding items, before or after the
// first one, and duplicate names are still refused.
func TestBatchGrow(t *testing.T) {
	checkLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, before := range []bool{true, false} {
		var batch unixmsg.Batch
		if before {
			batch.Grow(8)
		}
		if err := batch.AddBorrowed("a", ln.(*net.TCPListener), nil, nil); err != nil {
			t.Fatal(err)
		}
		if !before {
			batch.Grow(8)
		}
		if batch.Len() != 1 {
			t.Errorf("Grow before the first item %v: %d items, want 1", before, batch.Len())
		}
		if err := batch.AddBorrowed("a", ln.(*net.TCPListener), nil, nil); !errors.Is(err, unixmsg.ErrDuplicateName) {
			t.Errorf("Grow before the first item %v: a duplicate name gave %v, want ErrDuplicateName", before, err)
		}
		if err := batch.AddBorrowed("b", ln.(*net.TCPListener), nil, nil); err != nil || batch.Len() != 2 {
			t.Errorf("Grow before the first item %v: second item: %v, %d items", before, err, batch.Len())
		}
		batch.Close()
	}
}
