//go:build linux

package graceful_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/internal/handoffbench"
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

// BenchmarkHandoff hands TCP listeners (100, 1,000 and 3,000) over to a
// successor process. One op:
//
//   - fresh: a freshly started successor (the test binary re-run) takes
//     over from the previous generation, itself a separate process: New
//     (dial, HELLO, receive the batch, convert every listener), n Listen
//     calls that adopt, Ready (READY, DONE). Timed from just before the
//     successor is started until it is ready and the predecessor, which
//     closes its listeners at Exit, has exited and been reaped. Each
//     successor is the predecessor of the next op, ready and idle (its
//     duplicates for the successor made) before the op starts.
//   - floor: the same span for a successor that merely inherits the
//     listeners through exec and converts them with net.FileListener:
//     no protocol; the bound to compare fresh with.
//   - warm (1,000 only): this process as the successor, for every op
//     after the first, taking over from a child that loops: New, 1,000
//     Listen, Ready, as the successor sees it.
//
// For fresh and floor, the metrics other than ms/handoff split it (means
// over the ops): exec-ms until the successor's main, then its steps
// (new-ms, listen-ms, ready-ms; listen-ms is the conversion for floor), and
// exit-ms from its readiness until the predecessor was reaped; cpu-ms,
// minflt and nvcsw are the successor's CPU time, minor page faults and
// voluntary context switches (waits) until ready.
// See package internal/handoffbench.
func BenchmarkHandoff(b *testing.B) {
	for _, n := range []int{100, 1000, 3000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			b.Run("fresh", func(b *testing.B) { benchChain(b, handoffbench.FDPass, n) })
			b.Run("floor", func(b *testing.B) { benchChain(b, handoffbench.Floor, n) })
			if n == 1000 {
				b.Run("warm", func(b *testing.B) { benchWarm(b, n) })
			}
		})
	}
}

// benchChain times b.N handoffs to fresh successors of role.
func benchChain(b *testing.B, role handoffbench.Role, n int) {
	restartCheckLeaks(b)
	c := handoffbench.NewChain(b, role, n)
	samples := make([]handoffbench.Sample, 0, b.N)
	for range b.N {
		s, err := c.Handoff()
		if err != nil {
			b.Fatal(err)
		}
		samples = append(samples, s)
	}
	mean := func(f func(handoffbench.Sample) float64) float64 {
		var sum float64
		for _, s := range samples {
			sum += f(s)
		}
		return sum / float64(len(samples))
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(mean(func(s handoffbench.Sample) float64 { return ms(s.Total) }), "ms/handoff")
	for _, p := range samples[0].Phases {
		b.ReportMetric(mean(func(s handoffbench.Sample) float64 { return ms(s.Phase(p.Name)) }), p.Name+"-ms")
	}
	b.ReportMetric(mean(func(s handoffbench.Sample) float64 { return ms(s.CPU) }), "cpu-ms")
	b.ReportMetric(mean(func(s handoffbench.Sample) float64 { return float64(s.MinFlt) }), "minflt")
	b.ReportMetric(mean(func(s handoffbench.Sample) float64 { return float64(s.Switches) }), "nvcsw")
	b.ReportMetric(0, "ns/op")
	if b.N == 1 {
		return
	}
	// Where the successor's time goes, phase by phase, in one line (the
	// output of a benchmark is cut after ten).
	var t strings.Builder
	fmt.Fprintf(&t, "%s, %d listeners, means of %d handoffs, per phase: ms (the successor's CPU ms, minor faults, waits):", role.Name, n, len(samples))
	for i, p := range samples[0].Phases {
		phase := func(s handoffbench.Sample) handoffbench.Phase { return s.Phases[i] }
		fmt.Fprintf(&t, " %s %.2f", p.Name, mean(func(s handoffbench.Sample) float64 { return ms(phase(s).D) }))
		if p.Name != "exit" {
			fmt.Fprintf(&t, " (%.2f, %.0f, %.0f)",
				mean(func(s handoffbench.Sample) float64 { return ms(phase(s).CPU) }),
				mean(func(s handoffbench.Sample) float64 { return float64(phase(s).MinFlt) }),
				mean(func(s handoffbench.Sample) float64 { return float64(phase(s).Switches) }))
		}
	}
	b.Log(t.String())
}

// benchWarm hands n TCP listeners back and forth between this process and
// a child. Each timed handoff is this process's side as the successor:
// New (dial, HELLO, receive the batch, convert every listener), n Listen
// calls that adopt, and Ready (close the rest, READY, DONE; the duplicates
// for the next successor are made afterwards, in the background).
func benchWarm(b *testing.B, n int) {
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
