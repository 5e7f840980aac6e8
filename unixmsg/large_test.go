//go:build linux

package unixmsg_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg"
	"github.com/fdpass/fdpass/unixmsg/wire"
	"golang.org/x/sys/unix"
)

const (
	largeRole = "large-send"
	// largeItemsEnv tells the sending child how many items to send.
	largeItemsEnv = "UNIXMSG_LARGE_ITEMS"
	// largeSpare is the room, beyond the batch, that each process keeps
	// under RLIMIT_NOFILE for everything else it has open.
	largeSpare = 2000
	// largeWanted is the size of the always-run batch when the limit
	// allows it: more than 70 messages of 253 descriptors.
	largeWanted  = 18000
	largeTimeout = 50 * time.Second
)

var _ = registerChild(largeRole, largeChildSend)

// largeKinds is what item i is: the sender cycles through one source of
// each of these kinds.
var largeKinds = []kinds.Kind{
	kinds.TCPListener,
	kinds.UDP,
	kinds.UnixConn,
	kinds.UnixDatagram,
	kinds.File, // pipe
	kinds.File, // /dev/null
	kinds.Other,
	kinds.NetNS,
}

const largeBatchPayload = "the batch's own payload"

func largeName(i int) string { return fmt.Sprintf("item-%06d", i) }

func largePayload(i int) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(i)) }

// largeMeta is item i's meta; id is the identity of its source.
func largeMeta(i int, id string) unixmsg.Meta {
	return unixmsg.MetaOf("index", strconv.Itoa(i), "kind", largeKinds[i%len(largeKinds)].String(), "id", id)
}

// TestLargeBatch100k sends one batch of 100,000 descriptors from a second
// process. Batch.AddFD duplicates every descriptor, so the sender holds
// 100,000 too: each of the two processes needs an RLIMIT_NOFILE above
// 100,000. This process raises its limit, the child inherits it, and the
// test skips, naming the limit, where the hard limit is lower and cannot be
// raised (that takes CAP_SYS_RESOURCE).
func TestLargeBatch100k(t *testing.T) {
	const n = 100_000
	largeRaise(t, n)
	largeRun(t, n, syscall.SOCK_SEQPACKET)
}

// TestLargeBatchUnderLimit always runs: the largest batch that the
// descriptor limit allows in each of two processes, up to 18,000 items
// (72 messages), every item with its own name, meta and payload, each
// checked on receipt, with leak checks in both processes; over
// SOCK_SEQPACKET and over SOCK_STREAM, where the sender's writes of frames
// with descriptors are cut short whenever the socket buffer fills.
func TestLargeBatchUnderLimit(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	n := largeWanted
	if room := int(min(lim.Max, 1<<30)) - largeSpare; room < n {
		n = room
	}
	if n < 4*wire.MaxFDsPerMessage {
		t.Skipf("hard RLIMIT_NOFILE of %d leaves room for only %d descriptors per process", lim.Max, n)
	}
	t.Logf("%d items in %d messages (hard RLIMIT_NOFILE %d)", n, (n+wire.MaxFDsPerMessage-1)/wire.MaxFDsPerMessage, lim.Max)
	largeRaise(t, n)
	for _, tc := range []struct {
		name string
		typ  int
	}{
		{"seqpacket", syscall.SOCK_SEQPACKET},
		{"stream", syscall.SOCK_STREAM},
	} {
		t.Run(tc.name, func(t *testing.T) { largeRun(t, n, tc.typ) })
	}
}

// largeRaise raises the soft RLIMIT_NOFILE so that this process, and the
// child that inherits the limit, can hold n descriptors and their spare; it
// skips when the hard limit forbids it. The old soft limit comes back at
// cleanup.
func largeRaise(t *testing.T, n int) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	need := uint64(n + largeSpare)
	if old.Cur >= need {
		return
	}
	want := syscall.Rlimit{Cur: need, Max: max(old.Max, need)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		t.Skipf("a batch of %d descriptors needs RLIMIT_NOFILE of at least %d in the receiver (and in the sender, "+
			"which holds a duplicate of each): the soft limit is %d, the hard limit %d, and raising it failed: %v "+
			"(raising the hard limit takes CAP_SYS_RESOURCE)", n, need, old.Cur, old.Max, err)
	}
	t.Cleanup(func() {
		var cur syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur); err == nil {
			cur.Cur = old.Cur
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &cur)
		}
	})
}

// largeRun receives a batch of n items from a child over a socket of type
// typ and checks every one.
func largeRun(t *testing.T, n, typ int) {
	checkLeaks(t)
	lim := unixmsg.Limits{MaxItems: n}
	mine, theirs := socketPairFiles(t, typ)
	wait := startChild(t, largeRole, []string{largeItemsEnv + "=" + strconv.Itoa(n), rtGORACE()}, theirs)
	theirs.Close()
	rx := fileConn(t, mine, &unixmsg.Options{Limits: lim})
	defer rx.Close()
	if err := rx.SetDeadline(time.Now().Add(largeTimeout)); err != nil {
		t.Fatal(err)
	}

	before, err := fd.Count()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b, err := rx.Receive()
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	defer b.Close()
	t.Logf("received %d items in %v", b.Len(), time.Since(start))
	if b.Len() != n {
		t.Fatalf("received %d items, want %d", b.Len(), n)
	}
	if string(b.Payload()) != largeBatchPayload {
		t.Errorf("batch payload %q, want %q", b.Payload(), largeBatchPayload)
	}
	if during, err := fd.Count(); err != nil || during != before+n {
		t.Errorf("holding the batch: %d descriptors open (%v), want %d+%d", during, err, before, n)
	}

	ids := map[string]kinds.Kind{}
	bad := 0
	report := func(format string, args ...any) {
		if bad++; bad <= 10 {
			t.Errorf(format, args...)
		}
	}
	for i := range n {
		it := b.Item(i)
		want := largeKinds[i%len(largeKinds)]
		if it.Name != largeName(i) {
			report("item %d: name %q, want %q", i, it.Name, largeName(i))
		}
		if it.Kind != want {
			report("item %d: kind %s, want %s", i, it.Kind, want)
		}
		id := it.Meta.Value("id")
		if wantMeta := largeMeta(i, id); !slices.Equal(it.Meta, wantMeta) || id == "" {
			report("item %d: meta %q, want %q", i, it.Meta, wantMeta)
		}
		if !bytes.Equal(it.Payload, largePayload(i)) {
			report("item %d: payload %x, want %x", i, it.Payload, largePayload(i))
		}
		// Take every descriptor: it must be what the item says, and the
		// same open file as the sender's source.
		f, err := b.TakeFDAt(i)
		if err != nil {
			report("item %d: take: %v", i, err)
			continue
		}
		info, derr := kinds.Detect(f)
		got, ierr := fd.Identify(f)
		if cerr := fd.Close(f); cerr != nil {
			report("item %d: close: %v", i, cerr)
		}
		if derr != nil || info.Kind != want {
			report("item %d: descriptor detected as %s (%v), want %s", i, info.Kind, derr, want)
		}
		if ierr != nil || got.String() != id {
			report("item %d: descriptor is %s (%v), the sender's source %s", i, got, ierr, id)
		}
		ids[id] = want
	}
	if bad > 10 {
		t.Errorf("... %d failures in all", bad)
	}
	if len(ids) != len(largeKinds) {
		t.Errorf("the items came from %d sources, want %d", len(ids), len(largeKinds))
	}
	if after, err := fd.Count(); err != nil || after != before {
		t.Errorf("after closing every item: %d descriptors open (%v), want %d", after, err, before)
	}
	if err := b.Close(); err != nil {
		t.Errorf("close batch: %v", err)
	}

	// The child checks its own descriptors once the connection ends.
	rx.Close()
	if err := wait(); err != nil {
		t.Fatalf("child failed: %v (its messages are above)", err)
	}
}

// largeChildSend builds a batch of n items, each a duplicate of one of a
// few sources, sends it and checks that it leaked nothing.
func largeChildSend() {
	time.AfterFunc(largeTimeout+5*time.Second, func() {
		fmt.Fprintln(os.Stderr, "child: timed out")
		os.Exit(3)
	})
	n, err := strconv.Atoi(os.Getenv(largeItemsEnv))
	if err != nil {
		childFatal(err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		childFatal(err)
	}
	if lim.Cur < uint64(n+largeSpare) {
		childFatal(fmt.Errorf("RLIMIT_NOFILE is %d, the parent should have handed down %d", lim.Cur, n+largeSpare))
	}
	tx := childConn(&unixmsg.Options{Limits: unixmsg.Limits{MaxItems: n}})
	tx.SetDeadline(time.Now().Add(largeTimeout))
	before, err := fd.Count()
	if err != nil {
		childFatal(err)
	}

	srcs, closeSrcs := largeSources()
	ids := make([]string, len(srcs))
	for i, s := range srcs {
		id, err := fd.Identify(s)
		if err != nil {
			childFatal(err)
		}
		ids[i] = id.String()
		info, err := kinds.Detect(s)
		if err != nil || info.Kind != largeKinds[i] {
			childFatal(fmt.Errorf("source %d is %s (%v), want %s", i, info.Kind, err, largeKinds[i]))
		}
	}
	var b unixmsg.Batch
	for i := range n {
		j := i % len(srcs)
		if err := b.AddFD(largeName(i), srcs[j], largeMeta(i, ids[j]), largePayload(i)); err != nil {
			childFatal(err)
		}
	}
	closeSrcs()
	b.SetPayload([]byte(largeBatchPayload))
	if got, err := fd.Count(); err != nil || got != before+n {
		childFatal(fmt.Errorf("batch built: %d descriptors open (%v), want %d+%d", got, err, before, n))
	}
	if err := tx.Send(&b); err != nil {
		childFatal(fmt.Errorf("send: %w", err))
	}
	// Sending never closes the sender's descriptors.
	for i := range n {
		if b.Taken(i) {
			childFatal(fmt.Errorf("item %d taken by Send", i))
		}
	}
	if got, err := fd.Count(); err != nil || got != before+n {
		childFatal(fmt.Errorf("batch sent: %d descriptors open (%v), want %d+%d", got, err, before, n))
	}
	if err := b.Close(); err != nil {
		childFatal(fmt.Errorf("close the sent batch: %w", err))
	}
	if got, err := tx.Receive(); !errors.Is(err, io.EOF) {
		if got != nil {
			got.Close()
		}
		childFatal(fmt.Errorf("after the batch: got %v, want EOF", err))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		after, err := fd.Count()
		if err != nil {
			childFatal(err)
		}
		if after == before {
			break
		}
		if time.Now().After(deadline) {
			childFatal(fmt.Errorf("descriptor leak in sender: %d open before, %d after", before, after))
		}
		time.Sleep(5 * time.Millisecond)
	}
	tx.Close()
}

// largeSources opens one descriptor of each of largeKinds; closeAll closes
// them and whatever else was opened to make them.
func largeSources() (srcs []int, closeAll func()) {
	var closers []func()
	closeAll = func() {
		for _, c := range closers {
			c()
		}
	}
	must := func(err error) {
		if err != nil {
			childFatal(err)
		}
	}
	dup := func(v any) int {
		f, err := fd.Dup(v)
		must(err)
		closers = append(closers, func() { fd.Close(f) })
		return f
	}
	raw := func(f int, err error) int {
		must(err)
		closers = append(closers, func() { fd.Close(f) })
		return f
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	srcs = append(srcs, dup(ln))
	ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	must(err)
	srcs = append(srcs, dup(pc))
	pc.Close()
	for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM} {
		p, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
		must(err)
		srcs = append(srcs, raw(p[0], nil))
		raw(p[1], nil)
	}
	var p [2]int
	must(unix.Pipe2(p[:], unix.O_CLOEXEC))
	raw(p[0], nil)
	srcs = append(srcs, raw(p[1], nil))
	srcs = append(srcs, raw(unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)))
	srcs = append(srcs, raw(unix.Eventfd(0, unix.EFD_CLOEXEC)))
	srcs = append(srcs, raw(unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)))
	return srcs, closeAll
}
