package kinds_test

import (
	"errors"
	"net"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/kinds"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ownedFDs returns n descriptors of mixed kinds that the caller owns.
func ownedFDs(t *testing.T, n int) ([]int, []kinds.Kind) {
	src, want := mixedFDs(t, n)
	fds := make([]int, n)
	for i, s := range src {
		d, err := fd.DupFD(s)
		if err != nil {
			fd.CloseAll(fds[:i])
			t.Fatal(err)
		}
		fds[i] = d
	}
	return fds, want
}

// goType says whether v is the Go value ToValue makes for kind k.
func goType(v any, k kinds.Kind) bool {
	switch k {
	case kinds.TCPListener:
		_, ok := v.(*net.TCPListener)
		return ok
	case kinds.UnixListener:
		_, ok := v.(*net.UnixListener)
		return ok
	case kinds.TCPConn:
		_, ok := v.(*net.TCPConn)
		return ok
	case kinds.UnixConn, kinds.UnixDatagram:
		_, ok := v.(*net.UnixConn)
		return ok
	case kinds.UDP:
		_, ok := v.(*net.UDPConn)
		return ok
	case kinds.NetNS:
		_, ok := v.(netns.NsHandle)
		return ok
	}
	_, ok := v.(*os.File)
	return ok
}

func closeAll(vals []any) {
	for _, v := range vals {
		switch v := v.(type) {
		case interface{ Close() error }:
			v.Close()
		case netns.NsHandle:
			v.Close()
		}
	}
}

// toValuesFuncs are ToValues and ToValuesVerified, which must convert
// alike what is of its kind.
var toValuesFuncs = []struct {
	name string
	f    func([]int, []kinds.Kind, []string) ([]any, error)
}{
	{"ToValues", kinds.ToValues},
	{"ToValuesVerified", kinds.ToValuesVerified},
}

// TestToValues converts batches of mixed kinds, small (one at a time) and
// large (through slots, in parallel), with ToValues and ToValuesVerified:
// every value is of its kind's type and its descriptor is the socket's;
// nothing leaks.
func TestToValues(t *testing.T) {
	for _, tv := range toValuesFuncs {
		t.Run(tv.name, func(t *testing.T) { testToValues(t, tv.f) })
	}
}

func testToValues(t *testing.T, toValues func([]int, []kinds.Kind, []string) ([]any, error)) {
	for _, n := range []int{3, 200} {
		checkLeaks(t)
		fds, ks := ownedFDs(t, n)
		ids := make([]fd.ID, n)
		for i, f := range fds {
			id, err := fd.Identify(f)
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = id
		}
		vals, err := toValues(fds, ks, nil)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		for i, v := range vals {
			if !goType(v, ks[i]) {
				t.Errorf("n=%d item %d (%s): %T", n, i, ks[i], v)
				continue
			}
			nfd, _, err := kinds.FromValue(v)
			if err != nil {
				t.Errorf("n=%d item %d: %v", n, i, err)
				continue
			}
			if id, err := fd.Identify(nfd); err != nil || id != ids[i] {
				t.Errorf("n=%d item %d: value holds %v, want %v (%v)", n, i, id, ids[i], err)
			}
			fd.Close(nfd)
		}
		closeAll(vals)
	}
}

// TestToValuesMismatch: one descriptor declared as another kind fails the
// whole batch, naming it, and closes every descriptor and value.
func TestToValuesMismatch(t *testing.T) {
	for _, n := range []int{5, 200} {
		checkLeaks(t)
		fds, ks := ownedFDs(t, n)
		bad := n / 2
		for ks[bad] == kinds.UDP {
			bad++
		}
		ks[bad] = kinds.UDP
		vals, err := kinds.ToValues(fds, ks, nil)
		if err == nil || !errors.Is(err, kinds.ErrConvert) || vals != nil {
			t.Fatalf("n=%d: ToValues = %v, %v; want ErrConvert", n, vals, err)
		}
		t.Logf("n=%d: %v", n, err)
	}
}

// TestToValuesVerifiedNotSocket: ToValuesVerified does not check kinds,
// but a descriptor that is no socket, declared as one, still fails the
// batch in the conversion, naming it, and every descriptor and value is
// closed.
func TestToValuesVerifiedNotSocket(t *testing.T) {
	for _, n := range []int{7, 200} {
		checkLeaks(t)
		fds, ks := ownedFDs(t, n)
		bad := slices.Index(ks[n/2:], kinds.File) + n/2
		if bad < n/2 {
			bad = slices.Index(ks, kinds.File)
		}
		ks[bad] = kinds.TCPListener
		vals, err := kinds.ToValuesVerified(fds, ks, nil)
		if err == nil || !errors.Is(err, kinds.ErrConvert) || vals != nil {
			t.Fatalf("n=%d: ToValuesVerified = %v, %v; want ErrConvert", n, vals, err)
		}
		t.Logf("n=%d: %v", n, err)
	}
}

// TestToValuesLengths: mismatched lengths close every descriptor.
func TestToValuesLengths(t *testing.T) {
	for _, tv := range toValuesFuncs {
		t.Run(tv.name, func(t *testing.T) {
			checkLeaks(t)
			fds, ks := ownedFDs(t, 4)
			if _, err := tv.f(fds, ks[:3], nil); err == nil {
				t.Fatal("no error for 4 descriptors and 3 kinds")
			}
		})
	}
}

// TestToValuesFewDescriptorsSpare: converting needs only a few descriptors
// more than it is given (the sockets' own are closed as it goes, and at
// once when the process runs out), so a process near its RLIMIT_NOFILE can
// convert what it received.
func TestToValuesFewDescriptorsSpare(t *testing.T) {
	checkLeaks(t)
	const n = 300
	fds, ks := ownedFDs(t, n)
	for i := range ks {
		// Sockets only: files and namespace handles need no second
		// descriptor.
		if ks[i] == kinds.File || ks[i] == kinds.NetNS {
			ks[i] = kinds.Other
		}
	}
	var keep []int
	var keepK []kinds.Kind
	for i, k := range ks {
		if k == kinds.Other {
			fd.Close(fds[i])
			continue
		}
		keep, keepK = append(keep, fds[i]), append(keepK, k)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// The limit bounds descriptor numbers. Fill every free number below
	// the highest socket, as a process that received them would have, and
	// leave spare free numbers above it: room for a slot and a second
	// descriptor per processor, but not for a run of them.
	spare := 4 + runtime.GOMAXPROCS(0)*2
	highest := 0
	for _, f := range keep {
		highest = max(highest, f)
	}
	var filler []int
	defer func() { fd.CloseAll(filler) }()
	for {
		e, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		if e > highest {
			unix.Close(e)
			break
		}
		filler = append(filler, e)
	}
	limit := highest + 1 + spare
	low := lim
	low.Cur = uint64(limit)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Skipf("cannot lower RLIMIT_NOFILE: %v", err)
	}
	vals, err := kinds.ToValues(keep, keepK, nil)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatalf("%d sockets with %d descriptors to spare: %v", len(keep), spare, err)
	}
	closeAll(vals)
}

// BenchmarkToValues converts 1,000 descriptors of distinct TCP listeners
// per op: "each" with ToValue one at a time, "all" with ToValues,
// "verified" with ToValuesVerified (no kind checks). It is
// the floor under a handoff of 1,000 listeners (graceful's
// BenchmarkHandoff), whatever the exchange costs.
func BenchmarkToValues(b *testing.B) {
	const n = 1000
	lns := make([]net.Listener, n)
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		lns[i] = ln
	}
	ks := make([]kinds.Kind, n)
	for i := range ks {
		ks[i] = kinds.TCPListener
	}
	dups := func() []int {
		fds := make([]int, n)
		for i, ln := range lns {
			d, err := fd.Dup(ln)
			if err != nil {
				b.Fatal(err)
			}
			fds[i] = d
		}
		return fds
	}
	for _, c := range []struct {
		name    string
		convert func([]int) ([]any, error)
	}{
		{"each", func(fds []int) ([]any, error) {
			vals := make([]any, len(fds))
			for i, f := range fds {
				v, err := kinds.ToValue(f, kinds.TCPListener, "")
				if err != nil {
					return nil, err
				}
				vals[i] = v
			}
			return vals, nil
		}},
		{"all", func(fds []int) ([]any, error) { return kinds.ToValues(fds, ks, nil) }},
		{"verified", func(fds []int) ([]any, error) { return kinds.ToValuesVerified(fds, ks, nil) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			var total time.Duration
			for range b.N {
				b.StopTimer()
				fds := dups()
				b.StartTimer()
				start := time.Now()
				vals, err := c.convert(fds)
				total += time.Since(start)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				closeAll(vals)
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/1000")
		})
	}
}
