package tableflipcmp_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/fdpass/fdpass/internal/fdtest"
	"github.com/fdpass/fdpass/internal/handoffbench"
)

func TestMain(m *testing.M) {
	handoffbench.Main(tableflipRole)
	os.Exit(m.Run())
}

// tableflipRole is one generation of a service restarted with tableflip.
var tableflipRole = handoffbench.Role{Name: "tableflip", Signalled: true, Run: runTableflip}

func runTableflip(g *handoffbench.Gen) error {
	upg, err := tableflip.New(tableflip.Options{})
	if err != nil {
		return err
	}
	defer upg.Stop()
	g.Mark("new")
	lns := make([]net.Listener, 0, g.N)
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for _, addr := range g.Addrs {
		ln, err := upg.Listen("tcp", addr)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	g.Mark("listen")
	if err := upg.Ready(); err != nil {
		return err
	}
	g.Mark("ready")
	if err := g.Ready(upg.HasParent(), lns); err != nil {
		return err
	}
	// tableflip refuses to upgrade until the parent has exited.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := upg.WaitForParent(ctx); err != nil {
		return err
	}
	g.Idle()
	g.AwaitTurn()
	for {
		err = upg.Upgrade()
		// WaitForParent may return before the Upgrader has seen the
		// parent go: then it refuses, and is asked again.
		if err == nil || !strings.Contains(err.Error(), "parent hasn't exited") || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	if err != nil {
		return err
	}
	<-upg.Exit()
	return nil
}

// BenchmarkCompare times handoffs of 100, 1,000 and 3,000 listeners to a
// fresh successor with fdpass, tableflip and the floor, interleaved; see
// the package documentation.
func BenchmarkCompare(b *testing.B) {
	for _, n := range []int{100, 1000, 3000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) { compare(b, n) })
	}
}

func compare(b *testing.B, n int) {
	fdtest.CheckLeaks(b)
	roles := []handoffbench.Role{handoffbench.FDPass, tableflipRole, handoffbench.Floor}
	chains := make([]*handoffbench.Chain, len(roles))
	for i, r := range roles {
		chains[i] = handoffbench.NewChain(b, r, n)
	}
	samples := make([][]handoffbench.Sample, len(roles))
	for i := range b.N {
		// A rotating order: none always follows the same one.
		for j := range roles {
			k := (i + j) % len(roles)
			s, err := chains[k].Handoff()
			if err != nil {
				b.Fatalf("%s: %v", roles[k].Name, err)
			}
			samples[k] = append(samples[k], s)
		}
	}
	median := func(k int, f func(handoffbench.Sample) time.Duration) float64 {
		ds := make([]time.Duration, len(samples[k]))
		for i, s := range samples[k] {
			ds[i] = f(s)
		}
		return float64(handoffbench.Median(ds)) / float64(time.Millisecond)
	}
	total := func(s handoffbench.Sample) time.Duration { return s.Total }
	med := make([]float64, len(roles))
	for k, r := range roles {
		med[k] = median(k, total)
		b.ReportMetric(med[k], r.Name+"-ms")
	}
	b.ReportMetric(med[0]/med[1], "fdpass/tableflip")
	b.ReportMetric(med[0]/med[2], "fdpass/floor")
	b.ReportMetric(med[1]/med[2], "tableflip/floor")
	for _, p := range samples[0][0].Phases {
		b.ReportMetric(median(0, func(s handoffbench.Sample) time.Duration { return s.Phase(p.Name) }), "fdpass-"+p.Name+"-ms")
	}
	b.ReportMetric(0, "ns/op")
	if b.N == 1 {
		return
	}
	// Every variant's phases, in one line each (the output of a
	// benchmark is cut after ten).
	for k, r := range roles {
		var t strings.Builder
		fmt.Fprintf(&t, "%s, %d listeners, medians of %d: total %.2f ms, from main %.2f;", r.Name, n, len(samples[k]), med[k],
			median(k, func(s handoffbench.Sample) time.Duration { return s.Total - s.Phase("exec") }))
		for i, p := range samples[k][0].Phases {
			fmt.Fprintf(&t, " %s %.2f", p.Name, median(k, func(s handoffbench.Sample) time.Duration { return s.Phases[i].D }))
		}
		fmt.Fprintf(&t, "; successor CPU %.2f ms, %d minor faults", median(k, func(s handoffbench.Sample) time.Duration { return s.CPU }), medianInt(samples[k], func(s handoffbench.Sample) int64 { return s.MinFlt }))
		b.Log(t.String())
	}
}

func medianInt(samples []handoffbench.Sample, f func(handoffbench.Sample) int64) int64 {
	ds := make([]time.Duration, len(samples))
	for i, s := range samples {
		ds[i] = time.Duration(f(s))
	}
	return int64(handoffbench.Median(ds))
}
