//go:build linux

package graceful_test

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkHTTPTakeover: one takeover per op of an HTTPServer (its own
// process per generation) under 32 strict keep-alive HTTP/1 clients, with
// and without 4 cleartext HTTP/2 clients (Go's transport). It reports the
// slowest HTTP/1 request that ended after the successor's READY (its whole
// time, from the moment it was sent; every HTTP/1 connection migrates),
// as the median and the worst of the takeovers, and the successor's time
// from its start to READY. Any failed or retried request fails the
// benchmark. Run without -race for the figures:
//
//	go test -run '^$' -bench HTTPTakeover -benchtime 10x ./graceful/
func BenchmarkHTTPTakeover(b *testing.B) {
	for _, h2 := range []int{0, 4} {
		b.Run(fmt.Sprintf("h1=32,h2=%d", h2), func(b *testing.B) { benchHTTPTakeover(b, 32, h2) })
	}
}

func benchHTTPTakeover(b *testing.B, h1, h2 int) {
	const quiesce = 5 * time.Second
	dir := b.TempDir()
	g := startHTTPGens(b, httpGenEnv(dir, quiesce))
	l := newLoad()
	defer l.halt()
	l.h1Clients(g.addr, h1, 0, "/", time.Millisecond, nil)
	if h2 > 0 {
		l.goClients(h2cTransport(), "http://"+g.addr+"/", h2, h1, time.Millisecond)
	}
	l.allAt(b, h1+h2, 1)
	var slowest, ready []time.Duration
	b.ResetTimer()
	for range b.N {
		before := l.window()
		prev, r := g.takeover()
		l.window() // from READY on
		l.allAt(b, h1+h2, g.gen)
		prev.expect(fmt.Sprintf("drained gen=%d", g.gen-1))
		prev.mustExit()
		st := l.window()
		if m := st.migrated - before.migrated; m != int64(h1) {
			b.Errorf("takeover to gen %d: %d HTTP/1 connections migrated, want %d", g.gen, m, h1)
		}
		slowest = append(slowest, st.slowestH1)
		ready = append(ready, r)
	}
	b.StopTimer()
	st := l.halt()
	if st.failed != 0 || st.retried != 0 {
		b.Fatalf("%d requests failed, %d retried: %q", st.failed, st.retried, st.errs)
	}
	slices.Sort(slowest)
	slices.Sort(ready)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(slowest[len(slowest)/2]), "slowest-h1-median-ms")
	b.ReportMetric(ms(slowest[len(slowest)-1]), "slowest-h1-max-ms")
	b.ReportMetric(ms(ready[len(ready)/2]), "ready-median-ms")
	b.ReportMetric(0, "ns/op")
}
