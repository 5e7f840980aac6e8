//go:build linux

package graceful_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
)

const envListeners = "GT_LISTENERS"

var _ = registerRestartRole("bench", roleBench)

// benchGeneration starts one generation with n TCP listeners, inherited or
// created, and says Ready.
func benchGeneration(path string, n int) (*graceful.Process, []net.Listener, error) {
	p, err := graceful.New(graceful.Options{Path: path})
	if err != nil {
		return nil, nil, err
	}
	lns := make([]net.Listener, 0, n)
	for range n {
		ln, err := p.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			closeGeneration(p, lns)
			return nil, nil, err
		}
		lns = append(lns, ln)
	}
	if err := p.Ready(); err != nil {
		closeGeneration(p, lns)
		return nil, nil, err
	}
	return p, lns, nil
}

func closeGeneration(p *graceful.Process, lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
	p.Close()
}

// roleBench plays every other generation of the benchmark's chain: it
// takes over from the parent, says so, and hands back when asked.
func roleBench() error {
	n, err := strconv.Atoi(os.Getenv(envListeners))
	if err != nil {
		return err
	}
	base, err := fd.Count()
	if err != nil {
		return err
	}
	for {
		p, lns, err := benchGeneration(os.Getenv(envPath), n)
		if err != nil {
			return err
		}
		// The Process duplicates its listeners for the next successor in
		// the background; a real successor comes long after. Wait for
		// the duplicates (n listeners, n duplicates, the handoff listener
		// and its duplicate) so that the parent times a handoff, not the
		// preparation for it.
		for {
			c, err := fd.Count()
			if err != nil {
				return err
			}
			if c >= base+2*n+2 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		say("ready gen=%d inherited=%v", p.Generation(), p.Inherited())
		<-p.Exit()
		closeGeneration(p, lns)
	}
}

// BenchmarkHandoff hands 1,000 TCP listeners back and forth between this
// process and a child. Each timed handoff is this process's side as the
// successor: New (dial, HELLO, receive the batch, convert every listener),
// 1,000 Listen calls that adopt, and Ready (close the rest, READY, DONE;
// the duplicates for the next successor are made afterwards, in the
// background).
func BenchmarkHandoff(b *testing.B) {
	const n = 1000
	dir := b.TempDir()
	path := filepath.Join(dir, "handoff.sock")
	child := startRestartChild(b, "", "bench", nil, envPath+"="+path, envListeners+"="+strconv.Itoa(n))
	child.expect("ready gen=1 ")
	var total time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		p, lns, err := benchGeneration(path, n)
		took := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		total += took
		b.StopTimer()
		if !p.Inherited() {
			b.Fatal("not inherited")
		}
		if i == 0 {
			// Every adopted listener answers.
			for _, ln := range lns {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		}
		// Hand back to the child for the next round.
		<-p.Exit()
		closeGeneration(p, lns)
		child.expect(fmt.Sprintf("ready gen=%d ", p.Generation()+1))
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/handoff")
	b.ReportMetric(0, "ns/op")
}
