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
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg"
	"github.com/fdpass/fdpass/unixmsg/wire"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Child roles of this file.
const (
	rtRoleKinds   = "roundtrip-kinds"
	rtRoleIndex   = "roundtrip-index"
	rtRoleTwice   = "roundtrip-twice"
	rtRoleEmpty   = "roundtrip-empty"
	rtRolePayload = "roundtrip-payload"
	rtRoleReject  = "roundtrip-reject"

	// rtLimitsEnv hands the child the Limits its Conn must use.
	rtLimitsEnv = "UNIXMSG_RT_LIMITS"

	// rtIOTimeout bounds every blocking step on either side; rtChildTimeout
	// bounds a child's whole life.
	rtIOTimeout    = 20 * time.Second
	rtChildTimeout = 45 * time.Second
)

var (
	_ = registerChild(rtRoleKinds, rtChildKinds)
	_ = registerChild(rtRoleIndex, rtChildIndex)
	_ = registerChild(rtRoleTwice, rtChildTwice)
	_ = registerChild(rtRoleEmpty, rtChildEmpty)
	_ = registerChild(rtRolePayload, rtChildPayload)
	_ = registerChild(rtRoleReject, rtChildReject)
)

// Contents that one side writes and the other checks.
const (
	rtFileContent = "regular file content written by the parent\n\x00\xffend"
	rtFifoContent = "bytes the parent wrote into the FIFO after sending it"
	rtEventValue  = uint64(0x0123_4567_89ab)
	rtUTF8        = "ünïcødé ✓ \x00\xfe bytes"
)

var rtDirEntries = []string{"alpha", "beta", "gamma"}

// rtCase is one item of the every-kind batch. extra names the meta keys
// that follow the fixed ones, whose values only the parent knows.
type rtCase struct {
	name    string
	kind    kinds.Kind
	payload int
	extra   []string
}

var rtKindCases = []rtCase{
	{"tcp-listener", kinds.TCPListener, 0, []string{"addr"}},
	{"tcp-conn", kinds.TCPConn, 17, []string{"addr"}},
	{"udp", kinds.UDP, 1, []string{"addr"}},
	{"unix-listener", kinds.UnixListener, 100, []string{"addr"}},
	{"unixpacket-listener", kinds.UnixListener, 253, []string{"addr"}},
	{"unix-conn", kinds.UnixConn, 4096, nil},
	{"unixgram", kinds.UnixDatagram, 3, nil},
	{"file", kinds.File, 70000, nil}, // more than a default frame
	{"dir", kinds.File, 0, nil},
	{"fifo", kinds.File, 9, nil},
	{"devnull", kinds.File, 0, nil},
	{"netns", kinds.NetNS, 31, []string{"id"}},
	{"eventfd", kinds.Other, 5, nil},
}

// rtPayload returns n deterministic bytes that depend on seed.
func rtPayload(seed string, n int) []byte {
	h := uint32(2166136261)
	for i := 0; i < len(seed); i++ {
		h = (h ^ uint32(seed[i])) * 16777619
	}
	p := make([]byte, n)
	for i := range p {
		h = h*1664525 + 1013904223
		p[i] = byte(h >> 24)
	}
	return p
}

// rtMeta returns an item's meta: fixed entries that both sides can compute,
// then the extra key/value pairs.
func rtMeta(i int, name string, k kinds.Kind, extra ...string) unixmsg.Meta {
	m := unixmsg.MetaOf("case", name, "index", strconv.Itoa(i), "kind", k.String(), "empty", "", "utf8", rtUTF8)
	return append(m, unixmsg.MetaOf(extra...)...)
}

const rtFixedMeta = 5

// rtBatchPayload is the size of the every-kind batch's own payload.
const rtBatchPayload = 3000

// rtLimitsString encodes the limits a child must use.
func rtLimitsString(l unixmsg.Limits) string {
	return fmt.Sprintf("%s=%d,%d,%d,%d", rtLimitsEnv, l.MaxFrame, l.MaxPayload, l.MaxItems, l.MaxBatchBytes)
}

func rtChildOptions() *unixmsg.Options {
	s := os.Getenv(rtLimitsEnv)
	if s == "" {
		return nil
	}
	var l unixmsg.Limits
	if _, err := fmt.Sscanf(s, "%d,%d,%d,%d", &l.MaxFrame, &l.MaxPayload, &l.MaxItems, &l.MaxBatchBytes); err != nil {
		childFatal(fmt.Errorf("bad %s %q: %w", rtLimitsEnv, s, err))
	}
	return &unixmsg.Options{Limits: l}
}

// rtChild collects a child's failures; done reports them and exits.
type rtChild struct {
	fails []string
}

func newRTChild() *rtChild {
	time.AfterFunc(rtChildTimeout, func() {
		fmt.Fprintln(os.Stderr, "child: timed out")
		os.Exit(3)
	})
	return &rtChild{}
}

func (c *rtChild) errorf(format string, args ...any) {
	c.fails = append(c.fails, fmt.Sprintf(format, args...))
}

func (c *rtChild) fatalf(format string, args ...any) {
	c.errorf(format, args...)
	c.done()
}

func (c *rtChild) done() {
	if len(c.fails) == 0 {
		os.Exit(0)
	}
	for _, f := range c.fails {
		fmt.Fprintln(os.Stderr, "child:", f)
	}
	os.Exit(1)
}

func (c *rtChild) count() int {
	n, err := fd.Count()
	if err != nil {
		c.fatalf("count descriptors: %v", err)
	}
	return n
}

// leakCheck waits, up to a deadline, for the child's descriptor count to
// come back to before.
func (c *rtChild) leakCheck(before int) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		after := c.count()
		if after == before {
			return
		}
		if time.Now().After(deadline) {
			c.errorf("descriptor leak in child: %d open before receiving, %d after closing everything", before, after)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkItem checks an item's name, kind, fixed meta and payload, and returns
// the extra meta, whose keys it checks too.
func (c *rtChild) checkItem(b *unixmsg.Batch, i int, name string, k kinds.Kind, payload int, extra []string) unixmsg.Meta {
	it := b.Item(i)
	if it.Name != name {
		c.errorf("item %d: name %q, want %q", i, it.Name, name)
	}
	if it.Kind != k {
		c.errorf("item %d (%q): kind %s, want %s", i, name, it.Kind, k)
	}
	want := rtMeta(i, name, k)
	if len(it.Meta) != rtFixedMeta+len(extra) || !slices.Equal(it.Meta[:rtFixedMeta], want) {
		c.errorf("item %d (%q): meta %q, want %q followed by keys %q", i, name, it.Meta, want, extra)
		return nil
	}
	got := it.Meta[rtFixedMeta:]
	for j, key := range extra {
		if got[j].Key != key {
			c.errorf("item %d (%q): extra meta key %d is %q, want %q", i, name, j, got[j].Key, key)
		}
	}
	if p := rtPayload(name, payload); !bytes.Equal(it.Payload, p) {
		c.errorf("item %d (%q): payload of %d bytes differs from the %d sent", i, name, len(it.Payload), len(p))
	}
	return got
}

// --- every kind -------------------------------------------------------------

// TestRoundTripKinds sends one item of every kind to a second process over
// a SOCK_SEQPACKET and a SOCK_STREAM socket; the child checks each item's
// name, kind, meta and payload, takes it with the typed taker and proves it
// works against this process.
func TestRoundTripKinds(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  int
	}{
		{"seqpacket", syscall.SOCK_SEQPACKET},
		{"stream", syscall.SOCK_STREAM},
	} {
		t.Run(tc.name, func(t *testing.T) { rtKinds(t, tc.typ, unixmsg.Limits{}) })
	}
}

// TestRoundTripSmallFrames is TestRoundTripKinds with a MaxFrame of 97
// bytes on both sides: the batch travels in hundreds of frames, and on the
// stream socket a read holds several frames and ends inside one.
func TestRoundTripSmallFrames(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  int
	}{
		{"stream", syscall.SOCK_STREAM},
		{"seqpacket", syscall.SOCK_SEQPACKET},
	} {
		t.Run(tc.name, func(t *testing.T) { rtKinds(t, tc.typ, unixmsg.Limits{MaxFrame: 97}) })
	}
}

// rtStart starts a child in role with a socket of type typ between the two
// and returns this side's Conn (closed at cleanup) and the child's wait.
func rtStart(t *testing.T, role string, typ int, lim unixmsg.Limits, rxLim *unixmsg.Limits) (*unixmsg.Conn, func() error) {
	t.Helper()
	mine, theirs := socketPairFiles(t, typ)
	if rxLim == nil {
		rxLim = &lim
	}
	wait := startChild(t, role, []string{rtLimitsString(*rxLim), rtGORACE()}, theirs)
	theirs.Close()
	c := fileConn(t, mine, &unixmsg.Options{Limits: lim})
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(rtIOTimeout)); err != nil {
		t.Fatal(err)
	}
	return c, wait
}

// rtGORACE keeps a child built with -race from sleeping a second at exit.
func rtGORACE() string {
	return strings.TrimSpace("GORACE=" + os.Getenv("GORACE") + " atexit_sleep_ms=0")
}

// rtCloseSent closes a batch that was sent, and fails unless every one of
// its descriptors was still open: sending never closes them.
func rtCloseSent(t *testing.T, b *unixmsg.Batch) {
	t.Helper()
	open := 0
	for i := range b.Len() {
		if !b.Taken(i) {
			open++
		}
	}
	before, err := fd.Count()
	rtMust(t, err)
	if err := b.Close(); err != nil {
		t.Errorf("close the sent batch: %v", err)
	}
	after, err := fd.Count()
	rtMust(t, err)
	if before-after != open {
		t.Errorf("closing the sent batch of %d descriptors closed %d: Send closed some", open, before-after)
	}
}

func rtWait(t *testing.T, wait func() error) {
	t.Helper()
	if err := wait(); err != nil {
		t.Fatalf("child failed: %v (its messages are above)", err)
	}
}

func rtMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func rtUnixConn(t *testing.T, f *os.File) net.Conn {
	t.Helper()
	defer f.Close()
	c, err := net.FileConn(f)
	rtMust(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// rtReadAll reads c to EOF, within the I/O timeout.
func rtReadAll(t *testing.T, c net.Conn) string {
	t.Helper()
	rtMust(t, c.SetDeadline(time.Now().Add(rtIOTimeout)))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Errorf("read %s: %v", c.LocalAddr(), err)
	}
	return string(b)
}

// rtReadOne reads one datagram from c, within the I/O timeout.
func rtReadOne(t *testing.T, c net.Conn) string {
	t.Helper()
	rtMust(t, c.SetDeadline(time.Now().Add(rtIOTimeout)))
	buf := make([]byte, 1024)
	n, err := c.Read(buf)
	if err != nil {
		t.Errorf("read %s: %v", c.LocalAddr(), err)
	}
	return string(buf[:n])
}

func rtKinds(t *testing.T, typ int, lim unixmsg.Limits) {
	checkLeaks(t)
	dir := t.TempDir()

	// What goes into the batch, and what this side keeps.
	values := map[string]any{}
	extras := map[string][]string{}
	var closers []io.Closer // this side's copies of what it sends
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()

	tcpLn, err := net.Listen("tcp", "127.0.0.1:0")
	rtMust(t, err)
	closers = append(closers, tcpLn)
	values["tcp-listener"] = tcpLn
	extras["tcp-listener"] = []string{"addr", tcpLn.Addr().String()}

	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	rtMust(t, err)
	tcpSent, err := net.Dial("tcp", ln2.Addr().String())
	if err != nil {
		ln2.Close()
		t.Fatal(err)
	}
	closers = append(closers, tcpSent)
	tcpKept, err := ln2.Accept()
	ln2.Close()
	rtMust(t, err)
	defer tcpKept.Close()
	values["tcp-conn"] = tcpSent
	extras["tcp-conn"] = []string{"addr", tcpSent.LocalAddr().String()}

	udpSent, err := net.ListenPacket("udp", "127.0.0.1:0")
	rtMust(t, err)
	closers = append(closers, udpSent)
	udpKept, err := net.DialUDP("udp", nil, udpSent.LocalAddr().(*net.UDPAddr))
	rtMust(t, err)
	defer udpKept.Close()
	values["udp"] = udpSent
	extras["udp"] = []string{"addr", udpSent.LocalAddr().String()}

	for _, l := range []struct{ name, network string }{
		{"unix-listener", "unix"},
		{"unixpacket-listener", "unixpacket"},
	} {
		path := filepath.Join(dir, l.network+".sock")
		if len(path) >= 100 {
			// sun_path holds 108 bytes: fall back to an abstract name.
			path = fmt.Sprintf("@fdpass-roundtrip-%d-%d-%s", os.Getpid(), time.Now().UnixNano(), l.network)
		}
		ln, err := net.Listen(l.network, path)
		rtMust(t, err)
		// Only the child's copy stays: closing this one must not remove
		// the path the parent dials.
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		closers = append(closers, ln)
		values[l.name] = ln
		extras[l.name] = []string{"addr", path}
	}

	ucSent, ucKeptF := socketPairFiles(t, syscall.SOCK_STREAM)
	closers = append(closers, ucSent)
	ucKept := rtUnixConn(t, ucKeptF)
	values["unix-conn"] = ucSent

	ugSent, ugKeptF := socketPairFiles(t, syscall.SOCK_DGRAM)
	closers = append(closers, ugSent)
	ugKept := rtUnixConn(t, ugKeptF)
	values["unixgram"] = ugSent

	filePath := filepath.Join(dir, "file.txt")
	rtMust(t, os.WriteFile(filePath, []byte(rtFileContent), 0o600))
	file, err := os.Open(filePath)
	rtMust(t, err)
	closers = append(closers, file)
	values["file"] = file

	listing := filepath.Join(dir, "listing")
	rtMust(t, os.Mkdir(listing, 0o700))
	for _, e := range rtDirEntries {
		rtMust(t, os.WriteFile(filepath.Join(listing, e), nil, 0o600))
	}
	dirf, err := os.Open(listing)
	rtMust(t, err)
	closers = append(closers, dirf)
	values["dir"] = dirf

	fifoPath := filepath.Join(dir, "fifo")
	rtMust(t, unix.Mkfifo(fifoPath, 0o600))
	fifoR, err := os.OpenFile(fifoPath, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	rtMust(t, err)
	closers = append(closers, fifoR)
	fifoW, err := os.OpenFile(fifoPath, os.O_WRONLY, 0)
	rtMust(t, err)
	defer fifoW.Close()
	values["fifo"] = fifoR

	devnull, err := os.OpenFile("/dev/null", os.O_RDWR, 0)
	rtMust(t, err)
	closers = append(closers, devnull)
	values["devnull"] = devnull

	nsf, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Skipf("cannot open a network-namespace handle: %v", err)
	}
	ns := netns.NsHandle(nsf.Fd())
	nsID, err := fd.Identify(int(ns))
	rtMust(t, err)
	closers = append(closers, nsf)
	values["netns"] = ns
	extras["netns"] = []string{"id", nsID.String()}

	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	rtMust(t, err)
	defer unix.Close(efd)

	var b unixmsg.Batch
	defer b.Close()
	ids := make([]fd.ID, len(rtKindCases))
	for i, c := range rtKindCases {
		meta := rtMeta(i, c.name, c.kind, extras[c.name]...)
		payload := rtPayload(c.name, c.payload)
		switch c.name {
		case "eventfd":
			ids[i], err = fd.Identify(efd)
		case "netns":
			ids[i] = nsID
		default:
			ids[i], err = fd.IdentifyConn(values[c.name])
		}
		rtMust(t, err)
		if c.name == "eventfd" {
			err = b.AddFD(c.name, efd, meta, payload)
		} else {
			err = b.Add(c.name, values[c.name], meta, payload)
		}
		if err != nil {
			t.Fatalf("add %s: %v", c.name, err)
		}
		if got := b.Item(i).Kind; got != c.kind {
			t.Fatalf("add %s: detected as %s, want %s", c.name, got, c.kind)
		}
	}
	b.SetPayload(rtPayload("kinds batch", rtBatchPayload))
	// The batch holds duplicates: this side's copies go now, so that each
	// object lives on only in the batch, and from there in the child.
	for _, c := range closers {
		rtMust(t, c.Close())
	}
	closers = nil

	conn, wait := rtStart(t, rtRoleKinds, typ, lim, nil)
	if err := conn.Send(&b); err != nil {
		t.Fatalf("send: %v", err)
	}
	// Sending never closes the batch's descriptors: each is still open,
	// still the object that was added.
	for i := range rtKindCases {
		f, err := b.TakeFDAt(i)
		if err != nil {
			t.Errorf("item %d after Send: %v", i, err)
			continue
		}
		if id, err := fd.Identify(f); err != nil || id != ids[i] {
			t.Errorf("item %d after Send: descriptor %d is %v (%v), want %v", i, f, id, err, ids[i])
		}
		rtMust(t, fd.Close(f))
	}

	// First everything that does not wait for the child ...
	tcpDial, err := net.Dial("tcp", extras["tcp-listener"][1])
	rtMust(t, err)
	defer tcpDial.Close()
	rtMust(t, tcpKept.SetDeadline(time.Now().Add(rtIOTimeout)))
	_, err = tcpKept.Write([]byte("ping tcp"))
	rtMust(t, err)
	_, err = udpKept.Write([]byte("ping udp"))
	rtMust(t, err)
	unixDial, err := net.Dial("unix", extras["unix-listener"][1])
	rtMust(t, err)
	defer unixDial.Close()
	packetDial, err := net.Dial("unixpacket", extras["unixpacket-listener"][1])
	rtMust(t, err)
	defer packetDial.Close()
	rtMust(t, ucKept.SetDeadline(time.Now().Add(rtIOTimeout)))
	_, err = ucKept.Write([]byte("ping unix"))
	rtMust(t, err)
	_, err = ugKept.Write([]byte("ping unixgram"))
	rtMust(t, err)
	_, err = fifoW.Write([]byte(rtFifoContent))
	rtMust(t, err)
	rtMust(t, fifoW.Close())

	// ... then what the child answers.
	for _, x := range []struct {
		what, got, want string
	}{
		{"tcp listener", rtReadAll(t, tcpDial), "hello from tcp-listener"},
		{"tcp conn", rtReadAll(t, tcpKept), "pong tcp"},
		{"udp", rtReadOne(t, udpKept), "pong udp"},
		{"unix listener", rtReadAll(t, unixDial), "hello from unix-listener"},
		{"unixpacket listener", rtReadAll(t, packetDial), "hello from unixpacket-listener"},
		{"unix conn", rtReadAll(t, ucKept), "pong unix"},
		{"unixgram", rtReadOne(t, ugKept), "pong unixgram"},
	} {
		if x.got != x.want {
			t.Errorf("%s: child answered %q, want %q", x.what, x.got, x.want)
		}
	}
	rtWait(t, wait)

	// The child wrote to its copy of the eventfd.
	var buf [8]byte
	if n, err := unix.Read(efd, buf[:]); err != nil || n != 8 {
		t.Errorf("read eventfd counter: %d bytes, %v", n, err)
	} else if got := binary.NativeEndian.Uint64(buf[:]); got != rtEventValue {
		t.Errorf("eventfd counter is %#x, want %#x", got, rtEventValue)
	}
}

func rtChildKinds() {
	ct := newRTChild()
	c := childConn(rtChildOptions())
	before := ct.count()
	if err := c.SetDeadline(time.Now().Add(rtIOTimeout)); err != nil {
		ct.fatalf("%v", err)
	}
	b, err := c.Receive()
	if err != nil {
		ct.fatalf("receive: %v", err)
	}
	if b.Len() != len(rtKindCases) {
		b.Close()
		ct.fatalf("received %d items, want %d", b.Len(), len(rtKindCases))
	}
	if !bytes.Equal(b.Payload(), rtPayload("kinds batch", rtBatchPayload)) {
		ct.errorf("batch payload of %d bytes differs from the %d sent", len(b.Payload()), rtBatchPayload)
	}
	extra := map[string]string{}
	for i, k := range rtKindCases {
		if got := ct.checkItem(b, i, k.name, k.kind, k.payload, k.extra); len(got) > 0 {
			extra[k.name] = got[0].Value
		}
	}
	for i, k := range rtKindCases {
		ct.exercise(b, i, k, extra[k.name])
		if !b.Taken(i) {
			ct.errorf("item %q: not taken after its typed taker", k.name)
		}
	}
	if err := b.Close(); err != nil {
		ct.errorf("close batch: %v", err)
	}
	ct.leakCheck(before)
	c.Close()
	ct.done()
}

// exercise takes item i with its typed taker and uses it.
func (ct *rtChild) exercise(b *unixmsg.Batch, i int, k rtCase, extra string) {
	deadline := time.Now().Add(rtIOTimeout)
	fail := func(format string, args ...any) {
		ct.errorf("%s: "+format, append([]any{k.name}, args...)...)
	}
	// A taker of the wrong type refuses the item and leaves it.
	var wrong error
	switch k.kind {
	case kinds.TCPListener, kinds.UnixListener, kinds.UDP, kinds.UnixDatagram:
		_, wrong = b.Conn(k.name)
	default:
		_, wrong = b.Listener(k.name)
	}
	if !errors.Is(wrong, unixmsg.ErrWrongKind) {
		fail("wrong typed taker: got %v, want ErrWrongKind", wrong)
	}
	if b.Taken(i) {
		fail("taken by a refused typed taker")
		return
	}
	hello := func(ln net.Listener) {
		defer ln.Close()
		if got := ln.Addr().String(); got != extra {
			fail("listener address %q, sender said %q", got, extra)
		}
		if dl, ok := ln.(interface{ SetDeadline(time.Time) error }); ok {
			dl.SetDeadline(deadline)
		}
		conn, err := ln.Accept()
		if err != nil {
			fail("accept: %v", err)
			return
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("hello from " + k.name)); err != nil {
			fail("write: %v", err)
		}
	}
	pingPong := func(conn net.Conn, ping, pong string) {
		defer conn.Close()
		conn.SetDeadline(deadline)
		buf := make([]byte, len(ping))
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != ping {
			fail("read %q, %v; want %q", buf, err, ping)
			return
		}
		if _, err := conn.Write([]byte(pong)); err != nil {
			fail("write: %v", err)
		}
	}
	readFile := func(f *os.File, want string) {
		defer f.Close()
		f.SetReadDeadline(deadline)
		got, err := io.ReadAll(f)
		if err != nil || string(got) != want {
			fail("read %q, %v; want %q", got, err, want)
		}
	}
	switch k.name {
	case "tcp-listener", "unix-listener", "unixpacket-listener":
		ln, err := b.Listener(k.name)
		if err != nil {
			fail("%v", err)
			return
		}
		if k.name == "unixpacket-listener" && ln.Addr().Network() != "unixpacket" {
			fail("listener network %q, want unixpacket", ln.Addr().Network())
		}
		hello(ln)
	case "tcp-conn", "unix-conn":
		conn, err := b.Conn(k.name)
		if err != nil {
			fail("%v", err)
			return
		}
		if k.name == "tcp-conn" && conn.LocalAddr().String() != extra {
			fail("local address %q, sender said %q", conn.LocalAddr(), extra)
		}
		word := strings.TrimSuffix(k.name, "-conn")
		pingPong(conn, "ping "+word, "pong "+word)
	case "udp", "unixgram":
		pc, err := b.PacketConn(k.name)
		if err != nil {
			fail("%v", err)
			return
		}
		defer pc.Close()
		if k.name == "udp" && pc.LocalAddr().String() != extra {
			fail("local address %q, sender said %q", pc.LocalAddr(), extra)
		}
		pc.SetDeadline(deadline)
		buf := make([]byte, 64)
		n, from, err := pc.ReadFrom(buf)
		if want := "ping " + k.name; err != nil || string(buf[:n]) != want {
			fail("receive %q, %v; want %q", buf[:n], err, want)
			return
		}
		if k.name == "udp" {
			_, err = pc.WriteTo([]byte("pong udp"), from)
		} else if conn, ok := pc.(net.Conn); ok {
			_, err = conn.Write([]byte("pong unixgram"))
		} else {
			err = fmt.Errorf("%T is not a net.Conn", pc)
		}
		if err != nil {
			fail("reply: %v", err)
		}
	case "file":
		f, err := b.File(k.name)
		if err != nil {
			fail("%v", err)
			return
		}
		readFile(f, rtFileContent)
	case "fifo":
		f, err := b.File(k.name)
		if err != nil {
			fail("%v", err)
			return
		}
		readFile(f, rtFifoContent)
	case "dir":
		f, err := b.File(k.name)
		if err != nil {
			fail("%v", err)
			return
		}
		defer f.Close()
		names, err := f.Readdirnames(-1)
		slices.Sort(names)
		if err != nil || !slices.Equal(names, rtDirEntries) {
			fail("listed %q, %v; want %q", names, err, rtDirEntries)
		}
	case "devnull":
		f, err := b.File(k.name)
		if err != nil {
			fail("%v", err)
			return
		}
		defer f.Close()
		if info := ct.detect(f); info.Kind != kinds.File || info.Mode != unix.S_IFCHR {
			fail("detected %s with mode %#o, want a character device", info.Kind, info.Mode)
		}
		if n, err := f.Write([]byte("discard")); n != 7 || err != nil {
			fail("write: %d, %v", n, err)
		}
		if n, err := f.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			fail("read: %d, %v; want 0, EOF", n, err)
		}
	case "netns":
		h, err := b.NsHandle(k.name)
		if err != nil {
			fail("%v", err)
			return
		}
		defer h.Close()
		info, err := kinds.Detect(int(h))
		if err != nil || info.Kind != kinds.NetNS {
			fail("detected %s, %v; want %s", info.Kind, err, kinds.NetNS)
		}
		id, err := fd.Identify(int(h))
		if err != nil || id.String() != extra {
			fail("identity %s, %v; sender said %s", id, err, extra)
		}
		if cur, err := kinds.CurrentNetNS(); err != nil || cur != id {
			fail("child's own namespace is %s (%v), the handle's %s", cur, err, id)
		}
	case "eventfd":
		f, err := b.File(k.name)
		if err != nil {
			fail("%v", err)
			return
		}
		defer f.Close()
		if info := ct.detect(f); info.Kind != kinds.Other {
			fail("detected %s, want %s", info.Kind, kinds.Other)
		}
		var v [8]byte
		binary.NativeEndian.PutUint64(v[:], rtEventValue)
		f.SetWriteDeadline(deadline)
		if n, err := f.Write(v[:]); n != 8 || err != nil {
			fail("write counter: %d, %v", n, err)
		}
	default:
		fail("no exercise for this case")
		return
	}
	// Taken once, an item cannot be taken again.
	if _, err := b.File(k.name); !errors.Is(err, unixmsg.ErrTaken) {
		fail("second take: got %v, want ErrTaken", err)
	}
}

func (ct *rtChild) detect(f *os.File) kinds.Info {
	rc, err := f.SyscallConn()
	if err != nil {
		ct.errorf("%s: %v", f.Name(), err)
		return kinds.Info{}
	}
	var info kinds.Info
	var derr error
	rc.Control(func(s uintptr) { info, derr = kinds.Detect(int(s)) })
	if derr != nil {
		ct.errorf("%s: detect: %v", f.Name(), derr)
	}
	return info
}

// --- items without names, taken by index --------------------------------------

const rtIndexPipes = 3

// TestRoundTripByIndex sends items that have no name; the child takes them
// by index with TakeFDAt and writes through each pipe.
func TestRoundTripByIndex(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  int
	}{
		{"seqpacket", syscall.SOCK_SEQPACKET},
		{"stream", syscall.SOCK_STREAM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			var b unixmsg.Batch
			defer b.Close()
			var readers []*os.File
			defer func() {
				for _, r := range readers {
					r.Close()
				}
			}()
			for i := range rtIndexPipes {
				r, w, err := os.Pipe()
				rtMust(t, err)
				readers = append(readers, r)
				err = b.Add("", w, rtMeta(i, "", kinds.File), rtPayload(strconv.Itoa(i), 10*i))
				w.Close()
				rtMust(t, err)
			}
			devnull, err := os.Open("/dev/null")
			rtMust(t, err)
			err = b.Add("", devnull, rtMeta(rtIndexPipes, "", kinds.File), rtPayload(strconv.Itoa(rtIndexPipes), 1))
			devnull.Close()
			rtMust(t, err)

			conn, wait := rtStart(t, rtRoleIndex, tc.typ, unixmsg.Limits{}, nil)
			if err := conn.Send(&b); err != nil {
				t.Fatalf("send: %v", err)
			}
			rtCloseSent(t, &b)
			for i, r := range readers {
				rtMust(t, r.SetReadDeadline(time.Now().Add(rtIOTimeout)))
				got, err := io.ReadAll(r)
				if want := fmt.Sprintf("written through item %d", i); err != nil || string(got) != want {
					t.Errorf("pipe %d: read %q, %v; want %q", i, got, err, want)
				}
			}
			rtWait(t, wait)
		})
	}
}

func rtChildIndex() {
	ct := newRTChild()
	c := childConn(rtChildOptions())
	before := ct.count()
	c.SetDeadline(time.Now().Add(rtIOTimeout))
	b, err := c.Receive()
	if err != nil {
		ct.fatalf("receive: %v", err)
	}
	if b.Len() != rtIndexPipes+1 {
		b.Close()
		ct.fatalf("received %d items, want %d", b.Len(), rtIndexPipes+1)
	}
	if _, err := b.Lookup(""); !errors.Is(err, unixmsg.ErrNotFound) {
		ct.errorf("Lookup(\"\"): got %v, want ErrNotFound", err)
	}
	if _, err := b.TakeFD(""); !errors.Is(err, unixmsg.ErrNotFound) {
		ct.errorf("TakeFD(\"\"): got %v, want ErrNotFound", err)
	}
	for _, i := range []int{-1, b.Len()} {
		if _, err := b.TakeFDAt(i); !errors.Is(err, unixmsg.ErrNotFound) {
			ct.errorf("TakeFDAt(%d): got %v, want ErrNotFound", i, err)
		}
	}
	// Backwards, so that the order of taking is not the order of the batch.
	for i := b.Len() - 1; i >= 0; i-- {
		size := 10 * i
		if i == rtIndexPipes {
			size = 1
		}
		it := b.Item(i)
		if it.Name != "" || it.Kind != kinds.File || !slices.Equal(it.Meta, rtMeta(i, "", kinds.File)) ||
			!bytes.Equal(it.Payload, rtPayload(strconv.Itoa(i), size)) {
			ct.errorf("item %d arrived as %q %s meta %q payload of %d bytes", i, it.Name, it.Kind, it.Meta, len(it.Payload))
		}
		f, err := b.TakeFDAt(i)
		if err != nil {
			ct.errorf("TakeFDAt(%d): %v", i, err)
			continue
		}
		if _, err := b.TakeFDAt(i); !errors.Is(err, unixmsg.ErrTaken) {
			ct.errorf("second TakeFDAt(%d): got %v, want ErrTaken", i, err)
		}
		info, err := kinds.Detect(f)
		if err != nil {
			ct.errorf("item %d: detect: %v", i, err)
		}
		if i < rtIndexPipes {
			if info.Mode != unix.S_IFIFO {
				ct.errorf("item %d: mode %#o, want a pipe", i, info.Mode)
			}
			msg := fmt.Sprintf("written through item %d", i)
			if n, err := unix.Write(f, []byte(msg)); n != len(msg) || err != nil {
				ct.errorf("item %d: write: %d, %v", i, n, err)
			}
		} else if info.Mode != unix.S_IFCHR {
			ct.errorf("item %d: mode %#o, want a character device", i, info.Mode)
		}
		if err := fd.Close(f); err != nil {
			ct.errorf("item %d: close: %v", i, err)
		}
	}
	if err := b.Close(); err != nil {
		ct.errorf("close batch: %v", err)
	}
	ct.leakCheck(before)
	c.Close()
	ct.done()
}

// --- one batch sent twice ---------------------------------------------------

// TestRoundTripSendTwice sends the same batch twice on one Conn. Sending
// never closes the sender's descriptors, so both arrive whole, and the
// child's two copies of each item are the same open file.
func TestRoundTripSendTwice(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  int
	}{
		{"seqpacket", syscall.SOCK_SEQPACKET},
		{"stream", syscall.SOCK_STREAM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			rtMust(t, err)
			defer ln.Close()
			r, w, err := os.Pipe()
			rtMust(t, err)
			defer r.Close()
			defer w.Close()

			var b unixmsg.Batch
			defer b.Close()
			rtMust(t, b.Add("pipe", w, rtMeta(0, "pipe", kinds.File), rtPayload("pipe", 1000)))
			rtMust(t, b.Add("listener", ln, rtMeta(1, "listener", kinds.TCPListener), rtPayload("listener", 0)))
			conn, wait := rtStart(t, rtRoleTwice, tc.typ, unixmsg.Limits{}, nil)
			for round := range 2 {
				// Only the batch's own payload differs between the sends.
				b.SetPayload(rtPayload(fmt.Sprintf("round %d", round+1), 500))
				if err := conn.Send(&b); err != nil {
					t.Fatalf("send %d: %v", round+1, err)
				}
				for i := range b.Len() {
					if b.Taken(i) {
						t.Fatalf("send %d took item %d", round+1, i)
					}
				}
			}
			// Every descriptor is still open after two sends.
			rtCloseSent(t, &b)
			rtMust(t, w.Close())
			addr := ln.Addr().String()
			rtMust(t, ln.Close()) // the child's copies listen on

			var answers []string
			for range 2 {
				c, err := net.Dial("tcp", addr)
				rtMust(t, err)
				answers = append(answers, rtReadAll(t, c))
				c.Close()
			}
			slices.Sort(answers)
			if want := []string{"accepted by copy 1", "accepted by copy 2"}; !slices.Equal(answers, want) {
				t.Errorf("listener copies answered %q, want %q", answers, want)
			}
			rtMust(t, r.SetReadDeadline(time.Now().Add(rtIOTimeout)))
			got, err := io.ReadAll(r)
			if want := "through copy 1;through copy 2;"; err != nil || string(got) != want {
				t.Errorf("pipe: read %q, %v; want %q", got, err, want)
			}
			rtWait(t, wait)
		})
	}
}

func rtChildTwice() {
	ct := newRTChild()
	c := childConn(rtChildOptions())
	before := ct.count()
	c.SetDeadline(time.Now().Add(rtIOTimeout))
	// Both batches first: the sender waits for the second acknowledgement
	// before it dials the listeners.
	var batches [2]*unixmsg.Batch
	for round := range 2 {
		b, err := c.Receive()
		if err != nil {
			ct.fatalf("receive %d: %v", round+1, err)
		}
		batches[round] = b
		if b.Len() != 2 {
			ct.fatalf("receive %d: %d items, want 2", round+1, b.Len())
		}
		ct.checkItem(b, 0, "pipe", kinds.File, 1000, nil)
		ct.checkItem(b, 1, "listener", kinds.TCPListener, 0, nil)
	}
	// The first batch is intact after the second arrived.
	for round, b := range batches {
		if !bytes.Equal(b.Payload(), rtPayload(fmt.Sprintf("round %d", round+1), 500)) {
			ct.errorf("batch %d: its own payload is not what was sent with it", round+1)
		}
		ct.checkItem(b, 0, "pipe", kinds.File, 1000, nil)
	}
	var ids [2][2]fd.ID
	for round, b := range batches {
		p, err := b.File("pipe")
		if err != nil {
			ct.fatalf("batch %d: %v", round+1, err)
		}
		ids[round][0] = ct.identify(p)
		if _, err := fmt.Fprintf(p, "through copy %d;", round+1); err != nil {
			ct.errorf("write through copy %d: %v", round+1, err)
		}
		p.Close()
		ln, err := b.Listener("listener")
		if err != nil {
			ct.fatalf("batch %d: %v", round+1, err)
		}
		ids[round][1] = ct.identify(ln)
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(rtIOTimeout))
		if a, err := ln.Accept(); err != nil {
			ct.errorf("accept on copy %d: %v", round+1, err)
		} else {
			fmt.Fprintf(a, "accepted by copy %d", round+1)
			a.Close()
		}
		ln.Close()
		if err := b.Close(); err != nil {
			ct.errorf("close batch %d: %v", round+1, err)
		}
	}
	if ids[0] != ids[1] {
		ct.errorf("the two copies are different files: %v and %v", ids[0], ids[1])
	}
	ct.leakCheck(before)
	c.Close()
	ct.done()
}

func (ct *rtChild) identify(v any) fd.ID {
	id, err := fd.IdentifyConn(v)
	if err != nil {
		ct.errorf("identify %T: %v", v, err)
	}
	return id
}

// --- zero items ---------------------------------------------------------------

// TestRoundTripEmptyBatch sends batches of no items, one without and one
// with a batch payload, between batches of one item. The child holds on to
// every batch until the last has arrived, then checks each (what arrived
// later must not have overwritten what arrived earlier), and then receives
// the end of the connection.
func TestRoundTripEmptyBatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  int
	}{
		{"seqpacket", syscall.SOCK_SEQPACKET},
		{"stream", syscall.SOCK_STREAM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			devnull, err := os.Open("/dev/null")
			rtMust(t, err)
			defer devnull.Close()
			var one, two unixmsg.Batch
			defer one.Close()
			defer two.Close()
			rtMust(t, one.Add("one", devnull, rtMeta(0, "one", kinds.File), rtPayload("one", rtEmptySeqPayload)))
			rtMust(t, two.Add("two", devnull, rtMeta(0, "two", kinds.File), rtPayload("two", rtEmptySeqPayload)))
			var empty, emptyWithPayload unixmsg.Batch
			emptyWithPayload.SetPayload(rtPayload("empty", rtEmptySeqPayload))

			conn, wait := rtStart(t, rtRoleEmpty, tc.typ, unixmsg.Limits{}, nil)
			for i, b := range []*unixmsg.Batch{&empty, &one, &emptyWithPayload, &two, &empty} {
				if err := conn.Send(b); err != nil {
					t.Fatalf("send %d (%d items): %v", i+1, b.Len(), err)
				}
			}
			rtCloseSent(t, &one)
			rtCloseSent(t, &two)
			rtMust(t, conn.Close())
			rtWait(t, wait)
		})
	}
}

const rtEmptySeqPayload = 64

func rtChildEmpty() {
	ct := newRTChild()
	c := childConn(rtChildOptions())
	before := ct.count()
	c.SetDeadline(time.Now().Add(rtIOTimeout))
	seq := []struct {
		item    string // "" for no item
		payload string // seed of the batch payload, "" for none
	}{{"", ""}, {"one", ""}, {"", "empty"}, {"two", ""}, {"", ""}}
	var got []*unixmsg.Batch
	for i := range seq {
		b, err := c.Receive()
		if err != nil {
			ct.fatalf("receive %d: %v", i+1, err)
		}
		got = append(got, b)
	}
	if b, err := c.Receive(); !errors.Is(err, io.EOF) {
		if b != nil {
			b.Close()
		}
		ct.errorf("after the last batch: got %v, want EOF", err)
	}
	for i, b := range got {
		want := seq[i]
		if n := len(b.Items()); b.Len() != n || (n == 1) != (want.item != "") {
			ct.errorf("batch %d: %d items, want %s", i+1, b.Len(), map[bool]string{true: "1", false: "none"}[want.item != ""])
		} else if want.item != "" {
			ct.checkItem(b, 0, want.item, kinds.File, rtEmptySeqPayload, nil)
		}
		var wantPayload []byte
		if want.payload != "" {
			wantPayload = rtPayload(want.payload, rtEmptySeqPayload)
		}
		if !bytes.Equal(b.Payload(), wantPayload) {
			ct.errorf("batch %d: payload %x, want %x", i+1, b.Payload(), wantPayload)
		}
		if err := b.Close(); err != nil {
			ct.errorf("close batch %d: %v", i+1, err)
		}
	}
	ct.leakCheck(before)
	c.Close()
	ct.done()
}

// --- payloads near the limit ----------------------------------------------------

// rtPayloadLimit is the lowered Limits.MaxPayload of the payload tests.
const rtPayloadLimit = 256 << 10

var rtPayloadCases = []struct {
	name string
	size int
}{
	{"max", rtPayloadLimit},
	{"max-1", rtPayloadLimit - 1},
	{"zero", 0},
	{"one", 1},
	{"max-again", rtPayloadLimit},
	{"odd", rtPayloadLimit/2 + 7},
}

// TestRoundTripPayloadNearLimit sends items whose payloads are at and just
// under a lowered MaxPayload, in a batch whose own payload is at it; each spans several 64 KiB frames, and on the
// stream socket no frame fits one 64 KiB read, and a small send buffer
// cuts every frame into partial writes. An item or batch payload one byte
// over the limit fails on the sender before anything is written, and the
// Conn stays usable.
func TestRoundTripPayloadNearLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  int
	}{
		{"seqpacket", syscall.SOCK_SEQPACKET},
		{"stream", syscall.SOCK_STREAM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			lim := unixmsg.Limits{MaxPayload: rtPayloadLimit}
			devnull, err := os.Open("/dev/null")
			rtMust(t, err)
			defer devnull.Close()

			conn, wait := rtStart(t, rtRolePayload, tc.typ, lim, nil)
			if tc.typ == syscall.SOCK_STREAM {
				// A small send buffer makes every frame, the first with its
				// descriptors, go out in several partial writes.
				rtMust(t, conn.UnixConn().SetWriteBuffer(4096))
			}

			var over unixmsg.Batch
			defer over.Close()
			rtMust(t, over.Add("over", devnull, nil, make([]byte, rtPayloadLimit+1)))
			if err := conn.Send(&over); !errors.Is(err, unixmsg.ErrLimit) {
				t.Fatalf("send item payload of limit+1: got %v, want ErrLimit", err)
			}
			var overBatch unixmsg.Batch
			overBatch.SetPayload(make([]byte, rtPayloadLimit+1))
			if err := conn.Send(&overBatch); !errors.Is(err, unixmsg.ErrLimit) {
				t.Fatalf("send batch payload of limit+1: got %v, want ErrLimit", err)
			}

			var b unixmsg.Batch
			defer b.Close()
			for i, c := range rtPayloadCases {
				rtMust(t, b.Add(c.name, devnull, rtMeta(i, c.name, kinds.File), rtPayload(c.name, c.size)))
			}
			b.SetPayload(rtPayload("payload batch", rtPayloadLimit))
			if err := conn.Send(&b); err != nil {
				t.Fatalf("send (after the refused batch): %v", err)
			}
			rtCloseSent(t, &b)
			rtWait(t, wait)
		})
	}
}

func rtChildPayload() {
	ct := newRTChild()
	c := childConn(rtChildOptions())
	before := ct.count()
	c.SetDeadline(time.Now().Add(rtIOTimeout))
	b, err := c.Receive()
	if err != nil {
		ct.fatalf("receive: %v", err)
	}
	if b.Len() != len(rtPayloadCases) {
		b.Close()
		ct.fatalf("received %d items, want %d", b.Len(), len(rtPayloadCases))
	}
	for i, p := range rtPayloadCases {
		ct.checkItem(b, i, p.name, kinds.File, p.size, nil)
	}
	if !bytes.Equal(b.Payload(), rtPayload("payload batch", rtPayloadLimit)) {
		ct.errorf("batch payload of %d bytes differs from the %d sent", len(b.Payload()), rtPayloadLimit)
	}
	if err := b.Close(); err != nil {
		ct.errorf("close batch: %v", err)
	}
	ct.leakCheck(before)
	c.Close()
	ct.done()
}

// TestRoundTripPayloadOverReceiverLimit sends a payload that the sender's
// limit allows and the receiver's does not: the receiver refuses the batch
// with ErrLimit and leaks nothing, and the sender learns why.
func TestRoundTripPayloadOverReceiverLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  int
	}{
		{"seqpacket", syscall.SOCK_SEQPACKET},
		{"stream", syscall.SOCK_STREAM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			rxLim := unixmsg.Limits{MaxPayload: rtPayloadLimit / 2}
			conn, wait := rtStart(t, rtRoleReject, tc.typ, unixmsg.Limits{MaxPayload: rtPayloadLimit}, &rxLim)
			devnull, err := os.Open("/dev/null")
			rtMust(t, err)
			defer devnull.Close()
			var b unixmsg.Batch
			defer b.Close()
			rtMust(t, b.Add("ok", devnull, nil, rtPayload("ok", rtPayloadLimit/2)))
			rtMust(t, b.Add("too-big", devnull, nil, rtPayload("too-big", rtPayloadLimit/2+1)))
			err = conn.Send(&b)
			var rej *unixmsg.RejectedError
			if !errors.As(err, &rej) || rej.Status != wire.StatusLimit {
				t.Errorf("send: got %v, want a rejection with status %s", err, wire.StatusLimit)
			}
			rtWait(t, wait)
		})
	}
}

// TestRoundTripRejectSmallFrames is TestRoundTripPayloadOverReceiverLimit
// with a MaxFrame of 64 bytes on both sides, a legal setting (Limits sets no
// minimum) under which batches travel fine (see TestRoundTripSmallFrames).
// The receiver's refusal must still reach the sender as a RejectedError,
// although its reason is longer than 64 bytes.
func TestRoundTripRejectSmallFrames(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  int
	}{
		{"seqpacket", syscall.SOCK_SEQPACKET},
		{"stream", syscall.SOCK_STREAM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			const frame = 64
			rxLim := unixmsg.Limits{MaxPayload: 100, MaxFrame: frame}
			conn, wait := rtStart(t, rtRoleReject, tc.typ, unixmsg.Limits{MaxPayload: 1000, MaxFrame: frame}, &rxLim)
			devnull, err := os.Open("/dev/null")
			rtMust(t, err)
			defer devnull.Close()
			var b unixmsg.Batch
			defer b.Close()
			rtMust(t, b.Add("too-big", devnull, nil, rtPayload("too-big", 101)))
			err = conn.Send(&b)
			var rej *unixmsg.RejectedError
			if !errors.As(err, &rej) || rej.Status != wire.StatusLimit {
				t.Errorf("send: got %v, want a rejection with status %s", err, wire.StatusLimit)
			}
			rtWait(t, wait)
		})
	}
}

func rtChildReject() {
	ct := newRTChild()
	c := childConn(rtChildOptions())
	before := ct.count()
	c.SetDeadline(time.Now().Add(rtIOTimeout))
	b, err := c.Receive()
	if err == nil {
		b.Close()
		ct.fatalf("received a batch with a payload over the limit")
	}
	if !errors.Is(err, unixmsg.ErrLimit) {
		ct.errorf("receive: got %v, want ErrLimit", err)
	}
	ct.leakCheck(before)
	c.Close()
	ct.done()
}
