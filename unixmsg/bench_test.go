//go:build linux

package unixmsg_test

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/internal/rawsock"
	"github.com/fdpass/fdpass/unixmsg"
	"github.com/fdpass/fdpass/unixmsg/wire"
	"golang.org/x/sys/unix"
)

const benchFDs = 10000

var (
	_ = registerChild("bench-raw", benchSendRaw)
	_ = registerChild("bench-batch", benchSendBatch)
)

// BenchmarkTransfer moves 10,000 descriptors per op from a second process
// (the test binary re-run) to this one over a SOCK_SEQPACKET socketpair.
//
//   - raw: the plain sendmsg/recvmsg bound, 253 descriptors and one byte per
//     message, the receiver closing what arrives with close(2);
//   - raw-closerange: the same, closing each message's descriptors with one
//     close_range(2), as Batch.Close does: a stricter bound;
//   - unverified: a Batch whose items each carry a name and two meta
//     entries, received whole, without the kind check, then closed;
//   - verified: the same with every descriptor's kind checked.
//
// Sender and receiver live in different processes because each holds 10,000
// descriptors at once, and together they would pass the 20,000 hard
// RLIMIT_NOFILE of the machines this project runs on.
func BenchmarkTransfer(b *testing.B) { benchTransfer(b, nil) }

// BenchmarkTransferDistinct is BenchmarkTransfer with 10,000 distinct TCP
// listeners, as a real batch holds, rather than duplicates of one: the
// kernel keeps one count of references for all the duplicates of a
// socket, which every check of one from another processor contends for.
func BenchmarkTransferDistinct(b *testing.B) { benchTransfer(b, []string{envDistinct + "=1"}) }

// envDistinct, set, makes the sender's descriptors distinct listeners.
const envDistinct = "BENCH_DISTINCT"

func benchTransfer(b *testing.B, env []string) {
	raiseNoFile(b, benchFDs+1000)
	for _, rangeClose := range []bool{false, true} {
		name := "raw"
		if rangeClose {
			name = "raw-closerange"
		}
		b.Run(name, func(b *testing.B) { benchRaw(b, rangeClose, env) })
	}
	for _, verify := range []bool{false, true} {

		name := "unverified"
		if verify {
			name = "verified"
		}
		b.Run(name, func(b *testing.B) {
			mine, theirs := socketPairFiles(b, syscall.SOCK_SEQPACKET)
			wait := startChild(b, "bench-batch", env, theirs)
			theirs.Close()
			rx := fileConn(b, mine, &unixmsg.Options{SkipVerify: !verify})
			defer rx.Close()
			recv := func() {
				got, err := rx.Receive()
				if err != nil {
					b.Fatal(err)
				}
				if got.Len() != benchFDs {
					b.Fatalf("received %d items, want %d", got.Len(), benchFDs)
				}
				if err := got.Close(); err != nil {
					b.Fatal(err)
				}
			}
			recv() // the sender is up
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuNow()
			for range b.N {
				recv()
			}
			b.StopTimer()
			b.ReportMetric(float64(benchFDs*b.N)/b.Elapsed().Seconds(), "fds/s")
			b.ReportMetric(float64(cpuNow()-cpu0)/float64(b.N), "rx-cpu-ns/op")
			rx.Close()
			wait()
		})
	}
}

// benchRaw receives from a child that sends with plain sendmsg(2). The
// receiver closes each descriptor with close(2), as a hand-written loop
// would, or, with rangeClose, each message's run with close_range(2), the
// way Batch.Close does.
func benchRaw(b *testing.B, rangeClose bool, env []string) {
	mine, theirs := socketPairFiles(b, syscall.SOCK_SEQPACKET)
	defer mine.Close()
	wait := startChild(b, "bench-raw", env, theirs)
	theirs.Close()
	rc, err := mine.SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 16)
	oob := make([]byte, unix.CmsgSpace(4*wire.MaxFDsPerMessage))
	recvAll := func(n int) {
		for got := 0; got < n; {
			var oobn int
			var rerr error
			rc.Control(func(s uintptr) {
				_, oobn, _, rerr = rawsock.Recvmsg(int(s), buf, oob, unix.MSG_CMSG_CLOEXEC)
			})
			if rerr != nil {
				b.Fatal(rerr)
			}
			rfds, err := wire.ParseControl(oob[:oobn])
			if err != nil {
				b.Fatal(err)
			}
			if len(rfds) == 0 {
				b.Fatal("sender stopped")
			}
			got += len(rfds)
			if rangeClose {
				fd.CloseAll(rfds)
			} else {
				for _, f := range rfds {
					unix.Close(f)
				}
			}
		}
	}
	recvAll(benchFDs) // the sender is up
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuNow()
	for range b.N {
		recvAll(benchFDs)
	}
	b.StopTimer()
	b.ReportMetric(float64(benchFDs*b.N)/b.Elapsed().Seconds(), "fds/s")
	b.ReportMetric(float64(cpuNow()-cpu0)/float64(b.N), "rx-cpu-ns/op")
	mine.Close()
	wait()
}

// benchSources returns benchFDs duplicates of one TCP listener's
// descriptor, or with envDistinct set benchFDs distinct listeners' (on
// 127.0.0.1, ports of the kernel's choosing), and a listener for the
// items' meta.
func benchSources() (net.Listener, []int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		childFatal(err)
	}
	if os.Getenv(envDistinct) != "" {
		fds := make([]int, benchFDs)
		for i := range fds {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err == nil {
				fds[i], err = fd.Dup(l)
				l.Close()
			}
			if err != nil {
				childFatal(err)
			}
		}
		return ln, fds
	}
	src, err := fd.Dup(ln)
	if err != nil {
		childFatal(err)
	}
	fds := make([]int, benchFDs)
	for i := range fds {
		if fds[i], err = fd.DupFD(src); err != nil {
			childFatal(err)
		}
	}
	fd.Close(src)
	return ln, fds
}

// benchSendRaw sends benchFDs descriptors, 253 per sendmsg, over and over
// until the parent hangs up.
func benchSendRaw() {
	_, fds := benchSources()
	var oobs [][]byte
	for i := 0; i < len(fds); i += wire.MaxFDsPerMessage {
		oobs = append(oobs, unix.UnixRights(fds[i:min(i+wire.MaxFDsPerMessage, len(fds))]...))
	}
	for {
		for _, o := range oobs {
			if _, err := rawsock.Sendmsg(3, []byte{1}, o, unix.MSG_NOSIGNAL); err != nil {
				os.Exit(0)
			}
		}
	}
}

// benchSendBatch sends a batch of benchFDs named items with two meta
// entries each, over and over until the parent hangs up.
func benchSendBatch() {
	ln, fds := benchSources()
	tx := childConn(&unixmsg.Options{NoAck: os.Getenv("BENCH_NOACK") != ""})
	var batch unixmsg.Batch
	for i, f := range fds {
		meta := unixmsg.MetaOf("network", "tcp", "addr", ln.Addr().String())
		if err := batch.AddFD(fmt.Sprintf("listener-%d", i), f, meta, nil); err != nil {
			childFatal(err)
		}
		fd.Close(f)
	}
	for tx.Send(&batch) == nil {
	}
	os.Exit(0)
}

// raiseNoFile raises the soft RLIMIT_NOFILE to at least n, and skips when
// the hard limit forbids it.
func raiseNoFile(tb testing.TB, n uint64) {
	tb.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	want := lim
	want.Cur = n
	if want.Max < n {
		want.Max = n
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		tb.Skipf("needs RLIMIT_NOFILE of %d (have %d, hard %d) and cannot raise it: %v", n, lim.Cur, lim.Max, err)
	}
}

// cpuNow returns the CPU time, user and system, this process has used, in
// nanoseconds: the receiver's cost, apart from the sender's.
func cpuNow() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
