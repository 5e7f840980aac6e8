//go:build linux

package migrate

import (
	"bufio"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/kinds"
	"golang.org/x/sys/unix"
)

// BenchmarkQuiesce interrupts the readers of 4,096 connections, each
// waiting for its next line, until all wait in Handoff (all at once, as a
// migration does without FeatureStreamConns); giving every connection back
// afterwards is not timed.
// cpu-ms/op is the CPU time the process spends meanwhile, on all
// processors.
//
//	go test -run '^$' -bench BenchmarkQuiesce -benchmem ./graceful/
func BenchmarkQuiesce(b *testing.B) {
	const n = 4096
	tr := new(Tracker)
	peers := make([]int, 0, n)
	conns := make([]*Conn, 0, n)
	done := make(chan struct{}, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		for range conns {
			<-done
		}
		for _, fd := range peers {
			unix.Close(fd)
		}
	}()
	for range n {
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			b.Fatal(err)
		}
		peers = append(peers, sp[1])
		nc, err := streamConn(sp[0], kinds.UnixConn)
		if err != nil {
			unix.Close(sp[0])
			b.Fatal(err)
		}
		c := tr.Track(nc, nil)
		conns = append(conns, c)
		go func() {
			defer func() { done <- struct{}{} }()
			state := []byte("state")
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if errors.Is(err, ErrMigrating) {
					c.HandoffReader(state, r, []byte(line))
					continue
				}
				if err != nil {
					return
				}
			}
		}()
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	var spent time.Duration
	b.ResetTimer()
	for range b.N {
		start := cpu()
		out := &Outgoing{conns: tr.quiesce(time.Minute, logger(nil))}
		spent += cpu() - start
		if len(out.conns) != n {
			b.Fatalf("%d connections quiesced, want %d", len(out.conns), n)
		}
		b.StopTimer()
		out.Resume()
		b.StartTimer()
	}
	b.ReportMetric(float64(spent.Microseconds())/1000/float64(b.N), "cpu-ms/op")
}
