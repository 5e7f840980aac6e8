package main_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/proc"
)

// TestKeepAliveAcrossTakeovers keeps 64 keep-alive connections busy with
// requests while the server is handed over ten times: not one request may
// fail, and the connections move with the server instead of being
// redialled.
func TestKeepAliveAcrossTakeovers(t *testing.T) {
	const clients, takeovers = 64, 10
	dir := t.TempDir()
	bin, err := proc.Build(dir, "github.com/fdpass/fdpass/examples/httpserver")
	if err != nil {
		t.Skipf("cannot build the example: %v", err)
	}
	args := []string{"-graceful", filepath.Join(dir, "handoff.sock"), "-listen", "127.0.0.1:0", "-drain", "20s"}
	start := func() *proc.Instance {
		t.Helper()
		in, err := proc.Start(bin, args...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(in.Kill)
		return in
	}
	current := start()
	line, err := current.Await("ready", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + proc.Field(line, "addr") + "/"

	var dials atomic.Int64
	tr := &http.Transport{
		MaxIdleConnsPerHost: clients,
		MaxConnsPerHost:     clients,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	var ok, failed atomic.Int64
	var mu sync.Mutex
	var errs []string
	byInstance := map[string]int64{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(url)
				if err == nil {
					var body []byte
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && (resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "served by instance")) {
						err = fmt.Errorf("status %d: %q", resp.StatusCode, body)
					}
					if err == nil {
						mu.Lock()
						byInstance[resp.Header.Get("X-Instance")]++
						mu.Unlock()
					}
				}
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if len(errs) < 10 {
						errs = append(errs, err.Error())
					}
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		})
	}
	halt := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	defer halt()
	served := func(pid int) int64 {
		mu.Lock()
		defer mu.Unlock()
		return byInstance[fmt.Sprint(pid)]
	}
	await := func(pid int, n int64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for served(pid) < n {
			if time.Now().After(deadline) {
				t.Fatalf("instance %d served %d requests, want %d", pid, served(pid), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	await(current.PID(), 500)
	for range takeovers {
		next := start()
		if _, err := next.Await("ready", 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := current.Await("exit", 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := current.Wait(10 * time.Second); err != nil {
			t.Errorf("instance %d: %v", current.PID(), err)
		}
		current = next
		await(current.PID(), 500)
	}
	halt()
	t.Logf("%d requests answered, %d failed, %d connections dialled for %d clients across %d takeovers", ok.Load(), failed.Load(), dials.Load(), clients, takeovers)
	if failed.Load() != 0 {
		t.Errorf("%d requests failed; first errors: %v", failed.Load(), errs)
	}
	// Connections that were busy for longer than the quiesce timeout may
	// end with "Connection: close" and be redialled; most must migrate.
	if d := dials.Load(); d > clients*3 {
		t.Errorf("%d connections dialled for %d clients: keep-alive connections did not migrate", d, clients)
	}
}
