//go:build linux

package kinds_test

import (
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/kinds"
	"golang.org/x/sys/unix"
)

// benchSizes go from below the sizes at which VerifyAll spreads its checks
// over the processors and uses rings to beyond them.
var benchSizes = []int{16, 32, 63, 64, 128, 256, 512, 768, 1023, 1024, 2048, 4096, 10000}

// benchBatches are batches of the kinds VerifyAll reads through io_uring
// (sockets): one kind each, a mix of sockets, and a mix of everything (the
// files and devices checked one at a time on both paths).
func benchBatches(b *testing.B) []benchBatch {
	file := filepath.Join(b.TempDir(), "f")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		b.Fatal(err)
	}
	return []benchBatch{
		{"tcp-listener", []maker{makeInet(unix.SOCK_STREAM, true, kinds.TCPListener)}},
		{"tcp-conn", []maker{makeInet(unix.SOCK_STREAM, false, kinds.TCPConn)}},
		{"udp", []maker{makeInet(unix.SOCK_DGRAM, false, kinds.UDP)}},
		{"unix-listener", []maker{makeListener(unix.SOCK_STREAM)}},
		{"seqpacket-listener", []maker{makeListener(unix.SOCK_SEQPACKET)}},
		{"unix-conn", []maker{makePair(unix.SOCK_STREAM, kinds.UnixConn)}},
		{"seqpacket-conn", []maker{makePair(unix.SOCK_SEQPACKET, kinds.UnixConn)}},
		{"unixgram", []maker{makePair(unix.SOCK_DGRAM, kinds.UnixDatagram)}},
		{"sockets", socketKinds(b)},
		{"mix", append(socketKinds(b), makeFile(file), makeFile("/dev/null"))},
	}
}

type benchBatch struct {
	name   string
	makers []maker
}

// benchPaths are VerifyAll's two paths, and the path statistics that show
// each ran as asked for the kinds want: a ring refused would measure one
// at a time twice.
var benchPaths = []struct {
	name    string
	ringMin int
	stats   func(want []kinds.Kind) kinds.PathStats
}{
	{"each", math.MaxInt, eachStats},
	{"ring", 0, ringStats},
}

// ringStats are the paths of a batch of the kinds want through the ring:
// its sockets there, the rest one at a time.
func ringStats(want []kinds.Kind) kinds.PathStats {
	var socks int
	var others []kinds.Kind
	for _, k := range want {
		if k.IsSocket() {
			socks++
		} else {
			others = append(others, k)
		}
	}
	st := eachStats(others)
	st.Ring = socks
	return st
}

// BenchmarkVerifyAllPaths checks the same batch of distinct descriptors,
// all of kinds that VerifyAll reads through io_uring, again and again,
// through the ring (ring) and one descriptor at a time (each), at sizes
// around the threshold and above. The ring's setup and teardown are part
// of each op, as they are of each VerifyAll. Compare the paths by their
// ratio:
//
//	go test -run '^$' -bench 'BenchmarkVerifyAll(Paths|Cold)' -benchmem -count 3 ./kinds/
func BenchmarkVerifyAllPaths(b *testing.B) {
	for _, bt := range benchBatches(b) {
		for _, n := range benchSizes {
			fds, want := ringBatch(b, n, bt.makers...)
			for _, path := range benchPaths {
				b.Run(bt.name+"/n="+strconv.Itoa(n)+"/"+path.name, func(b *testing.B) {
					w := path.stats(want)
					for b.Loop() {
						i, st, err := kinds.VerifyAllFrom(fds, want, path.ringMin)
						if err != nil {
							b.Fatal(i, err)
						}
						if st != w {
							b.Fatalf("paths %+v, want %+v", st, w)
						}
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/fd")
				})
			}
			fd.CloseAll(fds)
		}
	}
}

// BenchmarkVerifyAllCold is BenchmarkVerifyAllPaths as a process that has
// just received its descriptors sees it: in each op, each path checks a
// batch opened for it (opening and closing are not timed), on an OS thread
// that never used io_uring before (the kernel sets up io_uring's context
// and workers per thread), the two paths taking turns to go first. One op
// runs both; each-ms and ring-ms are their times, ring/each the ratio.
func BenchmarkVerifyAllCold(b *testing.B) {
	for _, bt := range benchBatches(b) {
		for _, n := range benchSizes {
			b.Run(bt.name+"/n="+strconv.Itoa(n), func(b *testing.B) {
				var took [2]time.Duration
				for i := range b.N {
					for j := range benchPaths {
						p := (i + j) % len(benchPaths)
						took[p] += verifyCold(b, bt.makers, n, p)
					}
				}
				b.ReportMetric(float64(took[0].Nanoseconds())/1e6/float64(b.N), "each-ms")
				b.ReportMetric(float64(took[1].Nanoseconds())/1e6/float64(b.N), "ring-ms")
				b.ReportMetric(float64(took[1])/float64(took[0]), "ring/each")
			})
		}
	}
}

// verifyCold opens a batch of n, checks it through benchPaths[p] on a new
// OS thread, closes it and returns the time the check took.
func verifyCold(b *testing.B, makers []maker, n, p int) time.Duration {
	b.StopTimer()
	fds, want := ringBatch(b, n, makers...)
	defer func() {
		b.StopTimer()
		fd.CloseAll(fds)
		b.StartTimer()
	}()
	type result struct {
		took time.Duration
		st   kinds.PathStats
		err  error
	}
	done := make(chan result)
	b.StartTimer()
	go func() {
		// The thread is locked to this goroutine and ends with it, so
		// every check runs on a thread of its own.
		runtime.LockOSThread()
		start := time.Now()
		_, st, err := kinds.VerifyAllFrom(fds, want, benchPaths[p].ringMin)
		done <- result{time.Since(start), st, err}
	}()
	r := <-done
	if r.err != nil {
		b.Fatal(r.err)
	}
	if w := benchPaths[p].stats(want); r.st != w {
		b.Fatalf("%s: paths %+v, want %+v", benchPaths[p].name, r.st, w)
	}
	return r.took
}
