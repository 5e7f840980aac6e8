//go:build linux

package kinds_test

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/kinds"
	"golang.org/x/sys/unix"
)

// mixedFDs opens n descriptors of many kinds and returns them with their
// detected kinds. They are closed when the test ends.
func mixedFDs(tb testing.TB, n int) ([]int, []kinds.Kind) {
	tb.Helper()
	var vals []any
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { udp.Close() })
	name := fmt.Sprintf("@fdpass-verifyall-%d-%d", os.Getpid(), n)
	ul, err := net.Listen("unix", name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ul.Close() })
	uc, err := net.Dial("unix", name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { uc.Close() })
	ug, err := net.ListenPacket("unixgram", "")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ug.Close() })
	f, err := os.Open("/dev/null")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	ns, err := os.Open("/proc/self/ns/net")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ns.Close() })
	vals = append(vals, ln, c, udp, ul, uc, ug, f, ns)
	fds := make([]int, n)
	want := make([]kinds.Kind, n)
	for i := range fds {
		nfd, info, err := kinds.FromValue(vals[i%len(vals)])
		if err != nil {
			tb.Fatal(err)
		}
		fds[i], want[i] = nfd, info.Kind
	}
	tb.Cleanup(func() { fd.CloseAll(fds) })
	return fds, want
}

func TestVerifyAllAgreesWithVerify(t *testing.T) {
	checkLeaks(t)
	all, allWant := mixedFDs(t, 3000)
	// The sizes around the thresholds: one goroutine, spread over
	// several, sockets through the ring.
	spreadAt := sizeAt(allWant, false, kinds.MinSpreadCalls)
	ringAt := sizeAt(allWant, true, kinds.MinRingSockets)
	if ringAt > len(all) {
		t.Fatalf("%d descriptors never take the ring", len(all))
	}
	for _, n := range []int{5, spreadAt - 1, spreadAt, ringAt - 1, ringAt, len(all)} {
		fds, want := all[:n], allWant[:n]
		what := fmt.Sprintf("n=%d, the detected kinds", n)
		if i, err := verifyAllPaths(t, what, fds, want); err != nil || i != -1 {
			t.Fatalf("%s: VerifyAll = %d, %v; want -1, nil", what, i, err)
		}
		// Declare each position wrong in turn, against every kind; the
		// batch check must name that position and the kind Verify sees.
		for _, pos := range []int{0, n / 2, n - 1} {
			for k := kinds.Invalid; k <= kinds.Other+1; k++ {
				if k == want[pos] {
					continue
				}
				bad := append([]kinds.Kind(nil), want...)
				bad[pos] = k
				what := fmt.Sprintf("n=%d pos=%d declared %s (really %s)", n, pos, k, want[pos])
				i, err := verifyAllPaths(t, what, fds, bad)
				single := kinds.Verify(fds[pos], k)
				if i != pos || err == nil {
					t.Fatalf("%s: VerifyAll = %d, %v", what, i, err)
				}
				var me, se *kinds.MismatchError
				if !errors.As(err, &me) || !errors.As(single, &se) {
					t.Fatalf("%s: errors %v / %v are not MismatchErrors", what, err, single)
				}
				got := want[pos] // Verify names no kind for an invalid one
				if !k.Valid() {
					got = kinds.Invalid
				}
				if me.Got != got || *me != *se {
					t.Errorf("%s: VerifyAll says %+v, Verify says %+v", what, *me, *se)
				}
			}
		}
	}
}

// checkCalls is the number of system calls Verify takes for a descriptor
// that is of the kind k it is declared: one getsockopt for TCP and UDP,
// four socket options for other sockets, one for the other kinds.
func checkCalls(k kinds.Kind) int {
	if k.IsSocket() && k != kinds.TCPListener && k != kinds.TCPConn && k != kinds.UDP {
		return 4
	}
	return 1
}

// sizeAt returns the least n for which checking want[:n] one at a time
// takes min system calls or more (counting only the descriptors declared
// sockets if socks is set), or len(want)+1 if none does.
func sizeAt(want []kinds.Kind, socks bool, min int) int {
	calls := 0
	for i, k := range want {
		if k.IsSocket() || !socks {
			calls += checkCalls(k)
		}
		if calls >= min {
			return i + 1
		}
	}
	return len(want) + 1
}

// ringOK says whether this kernel can read socket options through
// io_uring (see ringSupport).
var ringOK = sync.OnceValue(func() bool { ok, _ := ringSupport(); return ok })

// verifyAllPaths returns what VerifyAll returns for the batch, after
// running the same batch through the ring whatever its size and one
// descriptor at a time whatever its size. It fails the test unless all
// three answer alike (the same index, and the same mismatch or error) and
// the ring, where the kernel has it, was not refused.
func verifyAllPaths(t *testing.T, what string, fds []int, want []kinds.Kind) (int, error) {
	t.Helper()
	i, err := kinds.VerifyAll(fds, want)
	for _, p := range []struct {
		name    string
		ringMin int
	}{{"through the ring", 0}, {"one at a time", math.MaxInt}} {
		pi, st, perr := kinds.VerifyAllFrom(fds, want, p.ringMin)
		if pi != i || !sameError(err, perr) {
			t.Errorf("%s: VerifyAll = %d, %v; %s: %d, %v", what, i, err, p.name, pi, perr)
		}
		if p.ringMin == 0 && st.RingErr != nil && ringOK() {
			t.Errorf("%s: the ring was refused or failed: %v", what, st.RingErr)
		}
		if p.ringMin != 0 && st.Ring+st.Behind != 0 {
			t.Errorf("%s: %s took the ring: %+v", what, p.name, st)
		}
	}
	return i, err
}

// sameError reports whether a and b are both nil, equal mismatches, or
// other errors with the same message.
func sameError(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	var am, bm *kinds.MismatchError
	if errors.As(a, &am) != errors.As(b, &bm) {
		return false
	}
	if am != nil {
		return *am == *bm
	}
	return a.Error() == b.Error()
}

func TestVerifyAllRawSockets(t *testing.T) {
	checkLeaks(t)
	// Sockets that look like TCP or UDP by protocol number alone must not
	// pass as TCP or UDP.
	var fds []int
	var want []kinds.Kind
	add := func(domain, typ, proto int) {
		s, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			t.Logf("socket(%d, %d, %d): %v (skipped)", domain, typ, proto, err)
			return
		}
		fds = append(fds, s)
		want = append(want, kinds.Other)
	}
	add(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP)
	add(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_UDP)
	add(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP)
	add(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(0x1100))) // SO_PROTOCOL reads 17
	add(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE)
	defer fd.CloseAll(fds)
	if len(fds) == 0 {
		t.Skip("no raw sockets could be created")
	}
	// Pad to a size whose sockets VerifyAll reads through io_uring:
	// 2,400 mixed descriptors take 4,500 calls' worth of sockets.
	pad, padWant := mixedFDs(t, 2400)
	all := append(append([]int(nil), fds...), pad...)
	if n := sizeAt(append(slices.Clone(want), padWant...), true, kinds.MinRingSockets); n > len(all) {
		t.Fatalf("%d descriptors do not take the ring", len(all))
	}
	for i := range fds {
		// Declared TCP or UDP (one getsockopt one at a time) or a unix
		// socket (four): the ring's answer and the one at a time must
		// name the same kind.
		for _, k := range []kinds.Kind{kinds.TCPListener, kinds.TCPConn, kinds.UDP, kinds.UnixConn, kinds.UnixDatagram} {
			w := append(append([]kinds.Kind(nil), want...), padWant...)
			w[i] = k
			j, err := verifyAllPaths(t, fmt.Sprintf("socket %d declared %s", i, k), all, w)
			if j != i || !errors.Is(err, kinds.ErrMismatch) {
				t.Errorf("socket %d declared %s: VerifyAll = %d, %v; want %d, a mismatch", i, k, j, err, i)
			}
			single := kinds.Verify(fds[i], k)
			if !errors.Is(single, kinds.ErrMismatch) {
				t.Errorf("socket %d declared %s: Verify = %v; want a mismatch", i, k, single)
			}
			var me, se *kinds.MismatchError
			if errors.As(err, &me) && errors.As(single, &se) && *me != *se {
				t.Errorf("socket %d declared %s: VerifyAll says %+v, Verify says %+v", i, k, *me, *se)
			}
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// BenchmarkVerify checks 10,000 duplicates of one listener one at a time
// (each: one getsockopt for TCP, four socket options for unix) and with
// VerifyAll (all), which reads both through io_uring where the kernel
// allows it (10,000 and 40,000 calls' worth of sockets).
func BenchmarkVerify(b *testing.B) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer tcp.Close()
	unixLn, err := net.Listen("unix", filepath.Join(b.TempDir(), "s"))
	if err != nil {
		b.Fatal(err)
	}
	defer unixLn.Close()
	for _, c := range []struct {
		name string
		ln   net.Listener
		k    kinds.Kind
	}{{"tcp", tcp, kinds.TCPListener}, {"unix", unixLn, kinds.UnixListener}} {
		fds := make([]int, 10000)
		want := make([]kinds.Kind, len(fds))
		for i := range fds {
			if fds[i], err = fd.Dup(c.ln); err != nil {
				b.Fatal(err)
			}
			want[i] = c.k
		}
		b.Run(c.name+"/each", func(b *testing.B) {
			for range b.N {
				for _, f := range fds {
					if err := kinds.Verify(f, c.k); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(len(fds)*b.N)/b.Elapsed().Seconds(), "fds/s")
		})
		b.Run(c.name+"/all", func(b *testing.B) {
			for range b.N {
				if _, err := kinds.VerifyAll(fds, want); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(fds)*b.N)/b.Elapsed().Seconds(), "fds/s")
		})
		fd.CloseAll(fds)
	}
}

// A maker opens one or more descriptors of one kind.
type maker func(tb testing.TB) ([]int, kinds.Kind)

func makeListener(typ int) maker {
	return func(tb testing.TB) ([]int, kinds.Kind) {
		s, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			tb.Fatal(err)
		}
		// An empty name autobinds an abstract address.
		if err := unix.Bind(s, &unix.SockaddrUnix{}); err != nil {
			tb.Fatal(err)
		}
		if err := unix.Listen(s, 1); err != nil {
			tb.Fatal(err)
		}
		return []int{s}, kinds.UnixListener
	}
}

// eachStats is the paths of the descriptors declared want, all checked one
// at a time: on several goroutines if that takes MinSpreadCalls system
// calls or more and GOMAXPROCS allows.
func eachStats(want []kinds.Kind) kinds.PathStats {
	var st kinds.PathStats
	calls := 0
	for _, k := range want {
		if checkCalls(k) == 1 && k.IsSocket() {
			st.OneCall++
		} else {
			st.Each++
		}
		calls += checkCalls(k)
	}
	if calls >= kinds.MinSpreadCalls && runtime.GOMAXPROCS(0) > 1 {
		st.Spread = len(want)
	}
	return st
}

// makeInet opens an IPv4 socket of type typ (TCP for a stream, UDP for
// datagrams) bound to the loopback, listening if listen is set.
func makeInet(typ int, listen bool, k kinds.Kind) maker {
	return func(tb testing.TB) ([]int, kinds.Kind) {
		s, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			tb.Fatal(err)
		}
		if err := unix.Bind(s, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			tb.Fatal(err)
		}
		if listen {
			if err := unix.Listen(s, 1); err != nil {
				tb.Fatal(err)
			}
		}
		return []int{s}, k
	}
}

func makePair(typ int, k kinds.Kind) maker {
	return func(tb testing.TB) ([]int, kinds.Kind) {
		p, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			tb.Fatal(err)
		}
		return p[:], k
	}
}

func makeFile(name string) maker {
	return func(tb testing.TB) ([]int, kinds.Kind) {
		n, err := unix.Open(name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			tb.Fatal(err)
		}
		return []int{n}, kinds.File
	}
}

// ringBatch opens n distinct descriptors, cycling through makers, and
// returns them with their kinds; the caller closes them.
func ringBatch(tb testing.TB, n int, makers ...maker) ([]int, []kinds.Kind) {
	fds := make([]int, 0, n+1)
	want := make([]kinds.Kind, 0, n+1)
	for i := 0; len(fds) < n; i++ {
		got, k := makers[i%len(makers)](tb)
		for _, f := range got {
			fds = append(fds, f)
			want = append(want, k)
		}
	}
	fd.CloseAll(fds[n:])
	return fds[:n], want[:n]
}

// socketKinds opens sockets of every kind: TCP listeners and conns, UDP,
// unix stream and seqpacket listeners and conns, and unix datagram sockets.
func socketKinds(tb testing.TB) []maker {
	return []maker{
		makeInet(unix.SOCK_STREAM, true, kinds.TCPListener), makeInet(unix.SOCK_STREAM, false, kinds.TCPConn),
		makeInet(unix.SOCK_DGRAM, false, kinds.UDP),
		makeListener(unix.SOCK_STREAM), makePair(unix.SOCK_STREAM, kinds.UnixConn),
		makeListener(unix.SOCK_SEQPACKET), makePair(unix.SOCK_SEQPACKET, kinds.UnixConn),
		makePair(unix.SOCK_DGRAM, kinds.UnixDatagram),
	}
}

// otherKinds opens descriptors of kinds other than sockets: a regular
// file, a directory and a character device.
func otherKinds(tb testing.TB) []maker {
	dir := tb.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		tb.Fatal(err)
	}
	return []maker{makeFile(file), makeFile(dir), makeFile("/dev/null")}
}

// ringKinds opens descriptors of every kind VerifyAll reads through the
// ring (the sockets) and of the others.
func ringKinds(tb testing.TB) []maker {
	return append(socketKinds(tb), otherKinds(tb)...)
}

// ownedBatch is ringBatch with the descriptors closed when the test ends.
func ownedBatch(tb testing.TB, n int, makers ...maker) ([]int, []kinds.Kind) {
	fds, want := ringBatch(tb, n, makers...)
	tb.Cleanup(func() { fd.CloseAll(fds) })
	return fds, want
}

// ownedRingBatch is ownedBatch of every kind the ring reads.
func ownedRingBatch(tb testing.TB, n int) ([]int, []kinds.Kind) {
	return ownedBatch(tb, n, ringKinds(tb)...)
}

// ringSupport reports whether this kernel can read socket options through
// io_uring, found without the package's help; why says what is missing.
// A ring refused for any other reason (a seccomp profile, say) is not an
// absence of support: the tests that need the ring fail then.
func ringSupport() (ok bool, why string) {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return false, fmt.Sprintf("uname: %v", err)
	}
	release := unix.ByteSliceToString(uts.Release[:])
	var major, minor int
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		return false, fmt.Sprintf("cannot read kernel release %q: %v", release, err)
	}
	if major < 6 || major == 6 && minor < 7 {
		return false, "kernel " + release + " has no SOCKET_URING_OP_GETSOCKOPT (Linux 6.7)"
	}
	var params [120]byte // struct io_uring_params
	r, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params[0])), 0)
	switch {
	case e == 0:
		unix.Close(int(r))
		return true, ""
	case e == unix.ENOSYS:
		return false, "kernel built without io_uring (io_uring_setup: ENOSYS)"
	}
	if b, err := os.ReadFile("/proc/sys/kernel/io_uring_disabled"); err == nil && strings.TrimSpace(string(b)) != "0" {
		return false, fmt.Sprintf("io_uring disabled by kernel.io_uring_disabled=%s (io_uring_setup: %v)", strings.TrimSpace(string(b)), e)
	}
	return true, ""
}

func needRing(t *testing.T) {
	t.Helper()
	if ok, why := ringSupport(); !ok {
		t.Skip(why)
	}
}

// interleave merges two batches, one of b after every few of a.
func interleave(a []int, ak []kinds.Kind, b []int, bk []kinds.Kind) ([]int, []kinds.Kind) {
	var fds []int
	var want []kinds.Kind
	for i, j := 0, 0; i < len(a) || j < len(b); {
		if i < len(a) {
			fds, want = append(fds, a[i]), append(want, ak[i])
			i++
		}
		if j < len(b) && (i%2 == 0 || i >= len(a)) {
			fds, want = append(fds, b[j]), append(want, bk[j])
			j++
		}
	}
	return fds, want
}

// TestVerifyAllPath shows which path VerifyAll takes: descriptors declared
// sockets through the ring once checking them one at a time would take
// MinRingSockets system calls (one per TCP or UDP socket, four per other
// socket), one at a time below that; descriptors of other kinds one at a
// time, however many.
func TestVerifyAllPath(t *testing.T) {
	checkLeaks(t)
	needRing(t)
	tcpFDs, tcpWant := ownedBatch(t, kinds.MinRingSockets, makeInet(unix.SOCK_STREAM, true, kinds.TCPListener), makeInet(unix.SOCK_DGRAM, false, kinds.UDP))
	unixFDs, unixWant := ownedBatch(t, kinds.MinRingSockets/4, makeListener(unix.SOCK_STREAM), makePair(unix.SOCK_SEQPACKET, kinds.UnixConn))
	sockFDs, sockWant := interleave(tcpFDs, tcpWant, unixFDs, unixWant)
	otherFDs, otherWant := ownedBatch(t, 1024, otherKinds(t)...)
	const calls = kinds.MinRingSockets
	type batch struct {
		fds  []int
		want []kinds.Kind
	}
	tcp := func(n int) batch { return batch{tcpFDs[:n], tcpWant[:n]} }
	unixs := func(n int) batch { return batch{unixFDs[:n], unixWant[:n]} }
	// mixed returns TCP and unix sockets that take exactly n calls one
	// at a time.
	mixed := func(n int) batch {
		u := n / 8
		f, w := interleave(tcpFDs[:n-4*u], tcpWant[:n-4*u], unixFDs[:u], unixWant[:u])
		return batch{f, w}
	}
	for _, tc := range []struct {
		name   string
		socks  batch
		others int
		ring   bool
	}{
		{"TCP and UDP under spreading", tcp(kinds.MinSpreadCalls - 1), 0, false},
		{"TCP and UDP spread", tcp(kinds.MinSpreadCalls), 0, false},
		{"others under spreading", tcp(0), kinds.MinSpreadCalls - 1, false},
		{"others spread", tcp(0), kinds.MinSpreadCalls, false},
		{"TCP and UDP just under", tcp(calls - 1), 0, false},
		{"TCP and UDP at", tcp(calls), 0, true},
		{"unix just under", unixs(calls/4 - 1), 0, false},
		{"unix at", unixs(calls / 4), 0, true},
		{"mixed just under", mixed(calls - 1), len(otherFDs), false},
		{"mixed at", mixed(calls), len(otherFDs), true},
		{"all", batch{sockFDs, sockWant}, len(otherFDs), true},
	} {
		fds, want := interleave(otherFDs[:tc.others], otherWant[:tc.others], tc.socks.fds, tc.socks.want)
		i, st, err := kinds.VerifyAllPaths(fds, want)
		if i != -1 || err != nil {
			t.Fatalf("%s: %d sockets and %d others: VerifyAll = %d, %v", tc.name, len(tc.socks.fds), tc.others, i, err)
		}
		w := eachStats(want)
		if tc.ring {
			w = ringStats(want)
		}
		if st != w {
			t.Errorf("%s (%d sockets, %d others): paths %+v, want %+v", tc.name, len(tc.socks.fds), tc.others, st, w)
		}
	}

	// The ring reads nothing: bytes and messages waiting on sockets it
	// checks are still there after.
	tcpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcpLn.Close()
	tc, err := net.Dial("tcp", tcpLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	ts, err := tcpLn.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.CloseAll(sp[:])
	if _, err := tc.Write([]byte("tcp bytes")); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(sp[0], []byte("a message")); err != nil {
		t.Fatal(err)
	}
	tsFD, _, err := kinds.FromValue(ts)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close(tsFD)
	// Wait for the bytes to reach the accepted end.
	if err := ts.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for {
		n, err := unix.IoctlGetInt(tsFD, unix.SIOCINQ)
		if err != nil {
			t.Fatal(err)
		}
		if n == len("tcp bytes") {
			break
		}
		select {
		case <-time.After(time.Millisecond):
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		}
	}
	fds := append([]int{tsFD, sp[1]}, sockFDs...)
	want := append([]kinds.Kind{kinds.TCPConn, kinds.UnixConn}, sockWant...)
	if i, st, err := kinds.VerifyAllPaths(fds, want); i != -1 || err != nil || st.Ring != len(fds) {
		t.Fatalf("sockets with data waiting: VerifyAll = %d, %v, paths %+v", i, err, st)
	}
	buf := make([]byte, 64)
	if n, err := ts.Read(buf); err != nil || string(buf[:n]) != "tcp bytes" {
		t.Errorf("TCP bytes after the ring: %q, %v", buf[:n], err)
	}
	if n, err := unix.Read(sp[1], buf); err != nil || string(buf[:n]) != "a message" {
		t.Errorf("seqpacket message after the ring: %q, %v", buf[:n], err)
	}

	// A descriptor declared a socket that is not one fails the ring's
	// probe and is checked one at a time behind it, with Verify's answer.
	ev, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ev)
	pos := len(sockFDs) / 2
	fds = slices.Insert(slices.Clone(sockFDs), pos, ev)
	want = slices.Insert(slices.Clone(sockWant), pos, kinds.UnixConn)
	wi, werr := verifyEach(fds, want)
	i, st, err := kinds.VerifyAllPaths(fds, want)
	if i != pos || wi != pos || !sameError(err, werr) {
		t.Fatalf("an eventfd declared a unix connection at %d: VerifyAll = %d, %v; Verify one at a time: %d, %v", pos, i, err, wi, werr)
	}
	if w := (kinds.PathStats{Ring: pos, Behind: 1}); st != w {
		t.Errorf("an eventfd declared a unix connection at %d: paths %+v, want %+v", pos, st, w)
	}
}

// TestVerifyAllRingRefused: when the kernel refuses a ring (here because
// the process has no descriptor number left for it), every descriptor is
// checked one at a time, with the same answers.
func TestVerifyAllRingRefused(t *testing.T) {
	checkLeaks(t)
	const n = kinds.MinRingSockets
	fds, want := ownedRingBatch(t, 2*n)
	bad := slices.Clone(want)
	bad[n] = kinds.UDP
	if want[n] == kinds.UDP {
		bad[n] = kinds.TCPListener
	}
	wi, werr := verifyEach(fds, bad)
	var wme *kinds.MismatchError
	if wi != n || !errors.As(werr, &wme) {
		t.Fatalf("Verify one at a time: %d, %v; want %d and a mismatch", wi, werr, n)
	}

	// Fill every free descriptor number below the highest open one and
	// set the limit just above it.
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	highest := slices.Max(fds)
	var filler []int
	defer func() { fd.CloseAll(filler) }()
	for {
		e, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		if e > highest {
			filler = append(filler, e)
			highest = e
			break
		}
		filler = append(filler, e)
	}
	low := lim
	low.Cur = uint64(highest + 1)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Skipf("cannot lower RLIMIT_NOFILE: %v", err)
	}
	i, st, err := kinds.VerifyAllPaths(fds, want)
	bi, bst, berr := kinds.VerifyAllPaths(fds, bad)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if i != -1 || err != nil {
		t.Errorf("detected kinds, no ring: VerifyAll = %d, %v", i, err)
	}
	if !errors.Is(st.RingErr, unix.EMFILE) || st.Ring != 0 || st.Behind != 0 || st.Each+st.OneCall != len(fds) {
		t.Errorf("detected kinds: paths %+v; want every descriptor one at a time, the ring refused with EMFILE", st)
	}
	var gme *kinds.MismatchError
	if bi != wi || !errors.As(berr, &gme) || *gme != *wme {
		t.Errorf("one declared wrong, no ring: VerifyAll = %d, %v; Verify one at a time: %d, %v", bi, berr, wi, werr)
	}
	// Every descriptor up to the one declared wrong is checked one at a
	// time.
	if !errors.Is(bst.RingErr, unix.EMFILE) || bst.Each+bst.OneCall < n+1 || bst.Ring != 0 || bst.Behind != 0 {
		t.Errorf("one declared wrong: paths %+v; want %d or more one at a time, the ring refused with EMFILE", bst, n+1)
	}
}

// TestVerifyAllClosedNumber: a descriptor number that is not open is
// reported as Verify reports it, even when the ring VerifyAll opens takes
// that very number.
func TestVerifyAllClosedNumber(t *testing.T) {
	checkLeaks(t)
	needRing(t)
	const n = kinds.MinRingSockets
	fds, want := ownedRingBatch(t, n)
	// The lowest free number: the next descriptor opened gets it.
	free, err := unix.FcntlInt(uintptr(fds[0]), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(free)
	for _, pos := range []int{0, n / 2, n} {
		for _, k := range []kinds.Kind{kinds.UnixConn, kinds.File, kinds.TCPConn} {
			f := slices.Insert(slices.Clone(fds), pos, free)
			w := slices.Insert(slices.Clone(want), pos, k)
			wi, werr := verifyEach(f, w)
			if wi != pos || !errors.Is(werr, unix.EBADF) {
				t.Fatalf("Verify one at a time, %d not open, declared %s: %d, %v", free, k, wi, werr)
			}
			i, err := kinds.VerifyAll(f, w)
			if i != wi || err == nil || err.Error() != werr.Error() {
				t.Errorf("%d not open at %d, declared %s: VerifyAll = %d, %v; Verify one at a time: %d, %v", free, pos, k, i, err, wi, werr)
			}
			if isOpen(free) {
				t.Fatalf("%d left open", free)
			}
		}
	}
}

// verifyEach is what VerifyAll must return: the first descriptor that
// Verify rejects.
func verifyEach(fds []int, want []kinds.Kind) (int, error) {
	for i, f := range fds {
		if err := kinds.Verify(f, want[i]); err != nil {
			return i, err
		}
	}
	return -1, nil
}

// TestVerifyAllFirstOfMany: with several wrong declarations in a large
// batch, VerifyAll names the first, whatever the kinds around it and
// whichever path checks it. The batch's sockets take more than
// MinRingSockets calls' worth, so that every descriptor declared a socket
// goes through the ring and every other one is checked one at a time
// first: a position in tcp is declared a TCP listener or UDP socket, one
// in unix a unix socket (both checked through the ring), one in other a
// file or a network namespace (checked one at a time, spread over the
// goroutines).
func TestVerifyAllFirstOfMany(t *testing.T) {
	checkLeaks(t)
	const n = 4096
	fds, want := mixedFDs(t, n)
	if sizeAt(want, true, kinds.MinRingSockets) > n {
		t.Fatalf("%d descriptors do not take the ring", n)
	}
	for _, c := range []struct{ tcp, unix, other []int }{
		{tcp: []int{3000}},
		{tcp: []int{3000, 100}},
		{tcp: []int{2000, 2001, 4095}},
		{tcp: []int{1, 1030, 2050, 3070}},
		{tcp: []int{4095}, unix: []int{7}},
		{tcp: []int{8, 3000}, unix: []int{9, 4000}},
		{tcp: []int{2500, 1200}, unix: []int{1300}},
		{other: []int{2000}},
		{other: []int{3000, 5, 4095}},
		{tcp: []int{1500}, other: []int{1501}},
		{unix: []int{2600}, other: []int{2599}},
		{tcp: []int{40}, unix: []int{41}, other: []int{3}},
		{tcp: []int{700}, unix: []int{30}, other: []int{4000, 31}},
	} {
		declared := slices.Clone(want)
		for _, pos := range c.tcp {
			declared[pos] = kinds.TCPListener
			if want[pos] == kinds.TCPListener {
				declared[pos] = kinds.UDP
			}
		}
		for _, pos := range c.unix {
			declared[pos] = kinds.UnixConn
			if want[pos] == kinds.UnixConn {
				declared[pos] = kinds.UnixListener
			}
		}
		for _, pos := range c.other {
			declared[pos] = kinds.File
			if want[pos] == kinds.File {
				declared[pos] = kinds.NetNS
			}
		}
		what := fmt.Sprintf("%d descriptors, wrong at %v, %v and %v", n, c.tcp, c.unix, c.other)
		i, err := verifyAllPaths(t, what, fds, declared)
		first := slices.Min(slices.Concat(c.tcp, c.unix, c.other))
		if i != first || !errors.Is(err, kinds.ErrMismatch) {
			t.Errorf("%s: VerifyAll = %d, %v; want %d and a mismatch", what, i, err, first)
		}
	}
}
