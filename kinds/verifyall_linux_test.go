//go:build linux

package kinds_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

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
	for _, n := range []int{5, 300, 1023, 1024, 3000} {
		fds, want := mixedFDs(t, n)
		if i, err := kinds.VerifyAll(fds, want); err != nil || i != -1 {
			t.Fatalf("n=%d: VerifyAll of the detected kinds = %d, %v; want -1, nil", n, i, err)
		}
		// Declare each position wrong in turn, against every kind; the
		// batch check must name that position and the kind Verify sees.
		for _, pos := range []int{0, n / 2, n - 1} {
			for k := kinds.TCPListener; k <= kinds.Other; k++ {
				if k == want[pos] {
					continue
				}
				bad := append([]kinds.Kind(nil), want...)
				bad[pos] = k
				i, err := kinds.VerifyAll(fds, bad)
				single := kinds.Verify(fds[pos], k)
				if i != pos || err == nil {
					t.Fatalf("n=%d pos=%d declared %s (really %s): VerifyAll = %d, %v", n, pos, k, want[pos], i, err)
				}
				var me, se *kinds.MismatchError
				if !errors.As(err, &me) || !errors.As(single, &se) {
					t.Fatalf("n=%d pos=%d declared %s: errors %v / %v are not MismatchErrors", n, pos, k, err, single)
				}
				if me.Got != want[pos] || *me != *se {
					t.Errorf("n=%d pos=%d declared %s: VerifyAll says %+v, Verify says %+v, really %s", n, pos, k, *me, *se, want[pos])
				}
			}
		}
	}
}

func TestVerifyAllRawSockets(t *testing.T) {
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
	// Pad to a size that takes the io_uring path.
	pad, padWant := mixedFDs(t, 2000)
	all := append(append([]int(nil), fds...), pad...)
	for i := range fds {
		// TCP and UDP are checked one call at a time; the other kinds
		// go through the ring, whose answer must name the same kind.
		for _, k := range []kinds.Kind{kinds.TCPListener, kinds.TCPConn, kinds.UDP, kinds.UnixConn, kinds.UnixDatagram} {
			w := append(append([]kinds.Kind(nil), want...), padWant...)
			w[i] = k
			j, err := kinds.VerifyAll(all, w)
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

// BenchmarkVerify checks 10,000 listener descriptors one system call at a
// time (each) and with VerifyAll (all): TCP ones, which VerifyAll also
// checks one at a time, and unix ones, which it reads through io_uring.
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
