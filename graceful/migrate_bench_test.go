//go:build linux

package graceful_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
	"golang.org/x/sys/unix"
)

var _ = registerRestartRole("migbench", roleMigBench)

// benchState is the 1 KiB session state of a connection, derived from its
// client's address so that the receiver can check it.
func benchState(remote net.Addr) []byte {
	s := []byte(remote.String() + ";")
	return bytes.Repeat(s, 1024/len(s)+1)[:1024]
}

// roleMigBench is one generation of the migration benchmark: it serves
// lines (answering each with its generation), takes the predecessor's
// connections at Ready and reports how long Ready took, then hands its own
// over and checks that it closed everything.
func roleMigBench() error {
	if s := os.Getenv(envNoFile); s != "" {
		if err := lowerNoFile(s); err != nil {
			return err
		}
	}
	before, err := fd.Count()
	if err != nil {
		return err
	}
	// Whether accepts were held (AcceptWait) when the first connections
	// arrived.
	var p *graceful.Process
	var held atomic.Int32
	migrated := func([]*graceful.Conn) error {
		if held.Load() == 0 {
			select {
			case <-p.AcceptWait():
				held.Store(1)
			default:
				held.Store(2)
			}
		}
		return nil
	}
	p, err = graceful.New(graceful.Options{Path: os.Getenv(envPath), Timeout: time.Minute, QuiesceTimeout: 30 * time.Second, Migrate: true, Migrated: migrated})
	if err != nil {
		return err
	}
	gen := p.Generation()
	ln, err := p.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	var badState atomic.Int64
	serve := func(c *graceful.Conn, state []byte) {
		wg.Go(func() {
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if errors.Is(err, graceful.ErrMigrating) {
					if c.HandoffReader(state, r, []byte(line)) {
						return
					}
					continue
				}
				if err != nil {
					c.Close()
					return
				}
				if _, err := fmt.Fprintf(c, "%d %s", gen, line); err != nil {
					c.Close()
					return
				}
			}
		})
	}
	wg.Go(func() {
		for {
			<-p.AcceptWait()
			c, err := ln.Accept()
			if err != nil {
				return
			}
			serve(p.Track(c), benchState(c.RemoteAddr()))
		}
	})
	profile := func(name string) func() {
		// GT_CPUPROFILE=dir profiles the successor's Ready and the
		// predecessor's handoff.
		dir := os.Getenv("GT_CPUPROFILE")
		if dir == "" {
			return func() {}
		}
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", name, gen)))
		if err != nil {
			return func() {}
		}
		pprof.StartCPUProfile(f)
		return func() { pprof.StopCPUProfile(); f.Close() }
	}
	stop := profile("successor")
	start, cpu0 := time.Now(), cpuTime()
	if err := p.Ready(); err != nil {
		return err
	}
	took, cpu := time.Since(start), cpuTime()-cpu0
	stop()
	conns, err := p.MigratedConns()
	if err != nil {
		return err
	}
	// How many connections carry bytes their client sent that no reader
	// here has seen: handed over with them, or waiting in the socket
	// (read after Ready, before anything is served).
	unread := 0
	for _, c := range conns {
		if c.Buffered() > 0 || pendingBytes(c.Conn) > 0 {
			unread++
		}
	}
	for _, c := range conns {
		if !bytes.Equal(c.State(), benchState(c.RemoteAddr())) {
			badState.Add(1)
		}
		serve(c, c.State())
	}
	stop = profile("predecessor")
	say("ready gen=%d addr=%s migrated=%d badstate=%d unread=%d took=%d cpu=%d held=%t", gen, ln.Addr(), len(conns), badState.Load(), unread, took.Microseconds(), cpu.Microseconds(), held.Load() == 2)
	<-p.Exit()
	stop()
	ln.Close()
	wg.Wait()
	p.Close()
	if err := awaitFDCount(before); err != nil {
		return err
	}
	say("exit gen=%d", gen)
	return nil
}

// pendingBytes returns how many bytes wait in c's socket to be read.
func pendingBytes(c net.Conn) int {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	rc.Control(func(s uintptr) { n, _ = unix.IoctlGetInt(int(s), unix.SIOCINQ) })
	return n
}

// cpuTime returns the CPU time this process has spent, on all processors.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchClients dials n connections to addr from this process and checks
// that each is answered by generation gen.
func benchClients(b testing.TB, addr string, n int) []net.Conn {
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range 32 {
		wg.Go(func() {
			for i := w; i < n; i += 32 {
				c, err := net.DialTimeout("tcp", addr, 30*time.Second)
				if err != nil {
					failed.Store(err)
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		b.Fatal(err)
	}
	return conns
}

// pingAll sends a line on every connection and checks that generation gen
// answers it.
func pingAll(b *testing.B, conns []net.Conn, gen uint64) {
	b.Helper()
	var wg sync.WaitGroup
	var bad atomic.Value
	for w := range 32 {
		wg.Go(func() {
			for i := w; i < len(conns); i += 32 {
				c := conns[i]
				c.SetDeadline(time.Now().Add(30 * time.Second))
				msg := fmt.Sprintf("ping %d\n", i)
				if _, err := io.WriteString(c, msg); err != nil {
					bad.Store(err)
					return
				}
				buf := make([]byte, 64)
				want := fmt.Sprintf("%d %s", gen, msg)
				if _, err := io.ReadFull(c, buf[:len(want)]); err != nil || string(buf[:len(want)]) != want {
					bad.Store(fmt.Errorf("connection %d: %q, %v; want %q", i, buf[:len(want)], err, want))
					return
				}
			}
		})
	}
	wg.Wait()
	if err, ok := bad.Load().(error); ok {
		b.Fatal(err)
	}
}

// BenchmarkMigrate moves 10,000 established TCP connections, each with 1
// KiB of session state, from one process to the next. The client ends live
// in this process, the server ends in two child processes at a time (the
// predecessor and the successor), so that no process holds more than about
// 12,000 descriptors. ms/migration is the successor's Ready: READY, the
// predecessor quiescing its 10,000 readers, the CONNS batches, ADOPTED and
// DONE; ns/op includes starting the successor process.
//
//	go test -run '^$' -bench BenchmarkMigrate -benchtime 5x ./graceful/
//
// It runs twice:
//
//   - idle: the clients wait while the connections move;
//   - busy: every client sends a line (in two writes a millisecond apart)
//     and reads its answer twice a second (20,000 lines a second in all),
//     through the migrations, so that readers are busy when the migration
//     interrupts them, some in the middle of a line, and
//     connections move with bytes nobody has read yet (unread-conns/op
//     counts those the successor found so, a lower bound as bytes still
//     arrive). Every line must be answered once, in order, by the
//     generation that read it or a later one.
//
// On the project's 2-core VM: 158-220 ms/migration idle (target 200),
// bound by CPU on both cores, which the two processes share: the
// predecessor interrupts its readers a batch or two ahead of the CONNS
// batches it streams, and the successor receives, checks each kind,
// registers each socket with the poller, and touches fresh memory at
// 12-15 µs a page. successor-cpu-ms/migration is the successor's CPU time
// during Ready, on all processors. GT_MIGRATE_CONNS sets another count;
// GT_CPUPROFILE=dir writes CPU profiles of both sides.
func BenchmarkMigrate(b *testing.B) {
	b.Run("idle", func(b *testing.B) { benchMigrate(b, false) })
	b.Run("busy", func(b *testing.B) { benchMigrate(b, true) })
}

func benchMigrate(b *testing.B, busy bool) {
	n := 10000
	if s := os.Getenv("GT_MIGRATE_CONNS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	dir := b.TempDir()
	env := []string{envPath + "=" + filepath.Join(dir, "handoff.sock")}
	prev := startRestartChild(b, "", "migbench", nil, env...)
	line := prev.expect("ready gen=1 ")
	conns := benchClients(b, field(line, "addr"), n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	pingAll(b, conns, 1)
	var load *busyClients
	if busy {
		load = startBusy(conns, 500*time.Millisecond)
	}
	var total, cpu time.Duration
	unread := 0
	gen := uint64(1)
	b.ResetTimer()
	for range b.N {
		gen++
		next := startRestartChild(b, "", "migbench", nil, env...)
		line := next.expect(fmt.Sprintf("ready gen=%d ", gen))
		b.StopTimer()
		if field(line, "migrated") != strconv.Itoa(n) || field(line, "badstate") != "0" {
			if load != nil {
				load.stop()
			}
			b.Fatalf("generation %d: %s, want %d connections migrated with their state", gen, line, n)
		}
		us, _ := strconv.Atoi(field(line, "took"))
		total += time.Duration(us) * time.Microsecond
		us, _ = strconv.Atoi(field(line, "cpu"))
		cpu += time.Duration(us) * time.Microsecond
		u, _ := strconv.Atoi(field(line, "unread"))
		unread += u
		prev.expect(fmt.Sprintf("exit gen=%d", gen-1))
		prev.mustExit()
		prev = next
		b.StartTimer()
	}
	b.StopTimer()
	if load != nil {
		lines, err := load.stop()
		if err != nil {
			b.Fatal(err)
		}
		if unread == 0 {
			b.Fatalf("no connection moved with unread bytes in %d migrations under load", b.N)
		}
		b.ReportMetric(float64(lines)/float64(b.N), "lines/op")
		b.ReportMetric(float64(unread)/float64(b.N), "unread-conns/op")
	}
	pingAll(b, conns, gen)
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/migration")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "successor-cpu-ms/migration")
}

// busyClients keeps every connection sending: a line, then its answer,
// each period, until stopped.
type busyClients struct {
	done  chan struct{}
	wg    sync.WaitGroup
	lines atomic.Int64
	bad   atomic.Value
}

// startBusy starts a client on each of conns, which send a numbered line
// every period (the first after a random part of it, so that they spread)
// and check that its answer comes back next, from the generation serving
// then or a later one.
func startBusy(conns []net.Conn, period time.Duration) *busyClients {
	l := &busyClients{done: make(chan struct{})}
	for i, c := range conns {
		l.wg.Go(func() {
			r := bufio.NewReader(c)
			wait := time.Duration(rand.Int64N(int64(period)))
			lastGen := uint64(0)
			for seq := 0; ; seq++ {
				select {
				case <-l.done:
					return
				case <-time.After(wait):
				}
				wait = period
				c.SetDeadline(time.Now().Add(30 * time.Second))
				msg := fmt.Sprintf("busy %d %d\n", i, seq)
				// In two writes a millisecond apart, so that some
				// readers are interrupted in the middle of a line.
				_, err := io.WriteString(c, msg[:5])
				if err == nil {
					time.Sleep(time.Millisecond)
					_, err = io.WriteString(c, msg[5:])
				}
				if err != nil {
					l.bad.Store(fmt.Errorf("connection %d, line %d: %w", i, seq, err))
					return
				}
				answer, err := r.ReadString('\n')
				g, rest, ok := strings.Cut(answer, " ")
				gen, gerr := strconv.ParseUint(g, 10, 64)
				if err != nil || !ok || gerr != nil || rest != msg || gen < lastGen {
					l.bad.Store(fmt.Errorf("connection %d: answer %q, %v; want %q from generation %d or later", i, answer, err, msg, lastGen))
					return
				}
				lastGen = gen
				l.lines.Add(1)
			}
		})
	}
	return l
}

// stop stops the clients once their lines in flight are answered, and
// returns how many lines were answered, or the first wrong answer.
func (l *busyClients) stop() (int64, error) {
	close(l.done)
	l.wg.Wait()
	if err, ok := l.bad.Load().(error); ok {
		return l.lines.Load(), err
	}
	return l.lines.Load(), nil
}
