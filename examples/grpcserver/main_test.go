//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/fdpass/fdpass/examples/internal/proc"
)

// TestTakeovers: unary RPCs and bidirectional streams from grpc-go
// clients, under load, across 10 takeovers: no RPC ends with a status
// other than OK, no stream breaks (every message of every stream is
// answered, in order, by the instance that opened it), and the clients
// reach each new generation. Each takeover's old instance stops
// gracefully and exits on its own.
func TestTakeovers(t *testing.T) {
	const takeovers, unary, streams, perStream = 10, 8, 4, 20
	dir := t.TempDir()
	bin := proc.BuildT(t, dir, "github.com/fdpass/fdpass/examples/grpcserver")
	args := []string{"-listen", "127.0.0.1:0", "-graceful", filepath.Join(dir, "handoff.sock")}
	current := proc.StartT(t, bin, args...)
	line, err := current.Await("ready ", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// A successor asks for the same address, and inherits the listener.
	addr := proc.Field(line, "addr")

	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(Codec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	var (
		stop             = make(chan struct{})
		wg               sync.WaitGroup
		mu               sync.Mutex
		errs             []string
		rpcs, msgs, strs atomic.Int64
		gens             = make([]atomic.Int64, unary+streams) // the generation each client last heard
	)
	fail := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, fmt.Sprintf(format, a...))
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for i := range unary {
		wg.Go(func() {
			for n := 0; !stopped(); n++ {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				in := []byte(fmt.Sprintf("u%d-%d", i, n))
				var out []byte
				err := conn.Invoke(ctx, "/fdpass.example.Echo/Echo", &in, &out)
				cancel()
				if err != nil {
					fail("unary client %d: %v (status %v)", i, err, status.Code(err))
					continue
				}
				gen, ok := echoed(out, in)
				if !ok {
					fail("unary client %d: answer %q to %q", i, out, in)
					continue
				}
				gens[i].Store(gen)
				rpcs.Add(1)
				time.Sleep(time.Millisecond)
			}
		})
	}
	desc := &EchoService.Streams[0]
	for i := range streams {
		wg.Go(func() {
			for s := 0; !stopped(); s++ {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				st, err := conn.NewStream(ctx, desc, "/fdpass.example.Echo/Chat")
				if err != nil {
					cancel()
					fail("stream client %d: opening stream %d: %v", i, s, err)
					continue
				}
				var first int64
				broken := false
				for m := range perStream {
					in := []byte(fmt.Sprintf("s%d-%d-%d", i, s, m))
					var out []byte
					if err := st.SendMsg(&in); err != nil {
						fail("stream client %d: stream %d message %d: send: %v", i, s, m, err)
						broken = true
						break
					}
					if err := st.RecvMsg(&out); err != nil {
						fail("stream client %d: stream %d message %d: receive: %v (status %v)", i, s, m, err, status.Code(err))
						broken = true
						break
					}
					gen, ok := echoed(out, in)
					if m == 0 {
						first = gen
					}
					if !ok || gen != first {
						fail("stream client %d: stream %d message %d: answer %q to %q, the stream began with generation %d", i, s, m, out, in, first)
						broken = true
						break
					}
					msgs.Add(1)
					time.Sleep(time.Millisecond)
				}
				if !broken {
					if err := st.CloseSend(); err != nil {
						fail("stream client %d: stream %d: CloseSend: %v", i, s, err)
					} else if err := st.RecvMsg(new([]byte)); err != io.EOF {
						fail("stream client %d: stream %d: end: %v (status %v)", i, s, err, status.Code(err))
					} else {
						strs.Add(1)
						gens[unary+i].Store(first)
					}
				}
				cancel()
			}
		})
	}
	halt := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer halt()
	// Every client has heard from generation gen.
	awaitAll := func(gen int64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			n := 0
			for i := range gens {
				if gens[i].Load() == gen {
					n++
				}
			}
			if n == len(gens) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d clients heard from generation %d", n, len(gens), gen)
			}
			time.Sleep(time.Millisecond)
		}
	}
	awaitAll(1)
	for gen := int64(2); gen <= takeovers+1; gen++ {
		start := time.Now()
		next := proc.StartT(t, bin, args...)
		if _, err := next.Await(fmt.Sprintf("ready pid=%d generation=%d ", next.PID(), gen), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		ready := time.Since(start)
		exit, err := current.Await("exit ", 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := current.Wait(10 * time.Second); err != nil {
			t.Fatalf("generation %d: %v", gen-1, err)
		}
		awaitAll(gen)
		t.Logf("takeover to generation %d: ready after %v; %s; %d RPCs, %d streams, %d stream messages so far", gen, ready.Round(time.Millisecond), exit, rpcs.Load(), strs.Load(), msgs.Load())
		current = next
	}
	halt()
	t.Logf("%d RPCs, %d streams (%d messages) in all", rpcs.Load(), strs.Load(), msgs.Load())
	if len(errs) > 0 {
		t.Errorf("%d failures: %q", len(errs), errs[:min(len(errs), 10)])
	}
	if rpcs.Load() == 0 || strs.Load() == 0 {
		t.Errorf("%d RPCs, %d streams: the load did not run", rpcs.Load(), strs.Load())
	}
}

// echoed checks that out is in answered by some generation, and returns
// it.
func echoed(out, in []byte) (int64, bool) {
	rest, ok := bytes.CutPrefix(out, []byte("gen="))
	if !ok {
		return 0, false
	}
	num, msg, ok := bytes.Cut(rest, []byte(" "))
	if !ok || !bytes.Equal(msg, in) {
		return 0, false
	}
	gen, err := strconv.ParseInt(string(num), 10, 64)
	return gen, err == nil
}
