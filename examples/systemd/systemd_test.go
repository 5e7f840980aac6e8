//go:build linux

// Package systemd_test runs examples/httpserver under the real systemd, as
// PID 1 of a machine of its own (internal/systemdtest), with the units of
// this directory, and drives it with systemctl under strict keep-alive
// load: reloads, a reload onto a broken build, a daemon-reload, a crash, a
// restart, a stop and a start, and, under LimitNOFILE=1024, a reload with
// more idle connections than the successor takes and one during a flood of
// connections that holds every descriptor.
package systemd_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/flood"
	"github.com/fdpass/fdpass/examples/internal/load"
	"github.com/fdpass/fdpass/examples/internal/proc"
	"github.com/fdpass/fdpass/internal/systemdtest"
)

func TestMain(m *testing.M) {
	systemdtest.Main()
	os.Exit(m.Run())
}

const (
	service = "fdpass-example.service"
	socket  = "fdpass-example.socket"
	binary  = "/usr/local/bin/httpserver"
	// settle bounds each wait for systemd or the service to get somewhere.
	settle = 60 * time.Second
)

// TestService: the service alone, its listener kept in the descriptor
// store.
func TestService(t *testing.T) { testUnits(t, false) }

// TestSocketUnit: the service with fdpass-example.socket, which holds the
// listener.
func TestSocketUnit(t *testing.T) { testUnits(t, true) }

// fixture is a machine running the example service under load.
type fixture struct {
	m      *systemdtest.Machine
	addr   string
	good   []byte // the httpserver binary
	socket bool
	ld     *load.Load
}

func testUnits(t *testing.T, withSocket bool) {
	f := start(t, withSocket)
	// The listener is in the store unless the socket unit holds it; a
	// takeover neither adds a duplicate nor removes it.
	wantStored := "1"
	if withSocket {
		wantStored = "0"
	}
	f.checkStored(t, wantStored)

	t.Run("reload", func(t *testing.T) {
		w := f.ld.Window()
		// Clients with a request in hand at every reload: their
		// connections move after the answer (the old process says
		// "late" in the journal), none is closed.
		slow, err := load.StartSlow(f.addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Stop()
		if _, err := slow.AwaitInstance(strconv.Itoa(f.m.MainPID(t, service)), settle); err != nil {
			t.Fatal(err)
		}
		late := strings.Count(f.m.Journal(service), " late pid=")
		for i := range 5 {
			old := f.m.MainPID(t, service)
			if _, err := slow.AwaitSlowBusy(settle); err != nil {
				t.Fatalf("reload %d: %v", i+1, err)
			}
			f.m.Systemctl(t, "reload", service)
			// systemctl reload returns once the successor serves: it is
			// the main process, and it answers a new connection.
			pid := f.m.MainPID(t, service)
			if pid == old || pid == 0 {
				t.Fatalf("reload %d: MainPID %d, was %d", i+1, pid, old)
			}
			if got := f.get(t); got != strconv.Itoa(pid) {
				t.Errorf("reload %d: a new connection is answered by %s, want the new MainPID %d", i+1, got, pid)
			}
			for _, l := range []*load.Load{f.ld, slow} {
				if _, err := l.AwaitInstance(strconv.Itoa(pid), settle); err != nil {
					t.Fatalf("reload %d: %v", i+1, err)
				}
			}
			f.awaitJournal(t, " late pid=", late+i+1)
			f.checkStored(t, wantStored)
		}
		st, sst := w.Close(), slow.Stop()
		t.Logf("5 reloads: %v; slow clients: %v", st, sst)
		for _, st := range []load.Stats{st, sst} {
			if st.Failed != 0 {
				t.Errorf("%d requests failed across 5 reloads: %q", st.Failed, st.Errors)
			}
		}
		for i, c := range sst.Clients {
			if c.Migrated != 5 || c.Redialled != 0 {
				t.Errorf("slow client %d: migrated %d times, redialled %d times across 5 reloads; want 5 and 0", i, c.Migrated, c.Redialled)
			}
		}
	})

	// A reload onto a build that fails, before READY (it takes the
	// listeners over, then exits with status 3) or after it (it refuses
	// the connections handed over): systemctl reload fails, the old
	// process serves on with its connections, and the good build back,
	// the next reload succeeds.
	for _, b := range []struct{ name, flag, says string }{
		{"reload-broken", "-fail-before-ready", "status 3 before READY"},
		{"reload-refused", "-refuse-connections", "-refuse-connections: refused"},
	} {
		t.Run(b.name, func(t *testing.T) {
			w := f.ld.Window()
			old := f.m.MainPID(t, service)
			broken := "#!/bin/sh\nexec " + binary + ".good \"$@\" " + b.flag + "\n"
			f.install(t, binary+".good", f.good)
			f.install(t, binary, []byte(broken))
			defer f.install(t, binary, f.good)
			out, err := f.m.Run("systemctl", "reload", service)
			if err == nil {
				t.Fatalf("systemctl reload onto a broken build (%s) succeeded: %s", b.flag, out)
			}
			t.Logf("systemctl reload: %v", err)
			if pid := f.m.MainPID(t, service); pid != old {
				t.Errorf("MainPID %d after a failed reload, want %d", pid, old)
			}
			if state := f.m.Show(t, service, "ActiveState"); state != "active" {
				t.Errorf("ActiveState %s after a failed reload", state)
			}
			if got := f.get(t); got != strconv.Itoa(old) {
				t.Errorf("after a failed reload a new connection is answered by %s, want %d", got, old)
			}
			if j := f.m.Journal(service); !strings.Contains(j, b.says) {
				t.Errorf("the journal does not say why the reload failed (%q):\n%s", b.says, j)
			}
			f.install(t, binary, f.good)
			f.m.Systemctl(t, "reload", service)
			pid := f.m.MainPID(t, service)
			if pid == old || pid == 0 {
				t.Fatalf("reload after a failed one: MainPID %d, was %d", pid, old)
			}
			if _, err := f.ld.AwaitInstance(strconv.Itoa(pid), settle); err != nil {
				t.Fatal(err)
			}
			st := w.Close()
			t.Logf("failed reload, then a good one: %v", st)
			if st.Failed != 0 {
				t.Errorf("%d requests failed across a failed reload and the next: %q", st.Failed, st.Errors)
			}
			f.checkStored(t, wantStored)
		})
	}

	// systemctl daemon-reload, as a package manager runs it, keeps the
	// store: the crash that follows is survived with the socket stored
	// before it.
	t.Run("daemon-reload", func(t *testing.T) {
		w := f.ld.Window()
		old := f.m.MainPID(t, service)
		f.m.Systemctl(t, "daemon-reload")
		if pid := f.m.MainPID(t, service); pid != old {
			t.Errorf("MainPID %d after daemon-reload, want %d", pid, old)
		}
		f.checkStored(t, wantStored)
		st := w.Close()
		t.Logf("daemon-reload: %v", st)
		if st.Failed != 0 {
			t.Errorf("%d requests failed across a daemon-reload: %q", st.Failed, st.Errors)
		}
	})

	t.Run("kill", func(t *testing.T) {
		w := f.ld.Window()
		old := f.m.MainPID(t, service)
		f.m.Systemctl(t, "kill", "-s", "KILL", "--kill-whom=main", service)
		pid := f.awaitNewMain(t, old)
		if n := f.m.Show(t, service, "NRestarts"); n == "0" {
			t.Errorf("NRestarts %s after SIGKILL", n)
		}
		st := w.Close()
		t.Logf("SIGKILL of %d, restarted as %d: %v", old, pid, st)
		// Requests the killed process had in hand may fail; no
		// connection attempt may.
		if st.ConnectFailed != 0 {
			t.Errorf("%d connection attempts failed (%d refused) across a crash: %q", st.ConnectFailed, st.Refused, st.Errors)
		}
		f.checkStored(t, wantStored)
	})

	t.Run("restart", func(t *testing.T) {
		w := f.ld.Window()
		old := f.m.MainPID(t, service)
		f.m.Systemctl(t, "restart", service)
		pid := f.awaitNewMain(t, old)
		st := w.Close()
		t.Logf("restart %d -> %d: %v", old, pid, st)
		if st.Failed != 0 {
			t.Errorf("%d requests failed (%d could not connect, %d refused) across a restart: %q", st.Failed, st.ConnectFailed, st.Refused, st.Errors)
		}
		f.checkStored(t, wantStored)
	})

	t.Run("stop-start", func(t *testing.T) {
		version := f.m.Version(t)
		w := f.ld.Window()
		old := f.m.MainPID(t, service)
		f.m.Systemctl(t, "stop", service)
		stored := f.m.Show(t, service, "NFileDescriptorStore")
		// Connect while stopped: queued in a backlog, or refused.
		c, dialErr := net.DialTimeout("tcp", f.addr, 5*time.Second)
		if c != nil {
			c.Close()
		}
		// With the socket unit the connection above (or the load's) may
		// have started the service already; start waits for it then.
		f.m.Systemctl(t, "start", service)
		pid := f.awaitNewMain(t, old)
		st := w.Close()
		t.Logf("systemd %d, stop and start %d -> %d: store while stopped %s, connect while stopped: %v; %v", version, old, pid, stored, dialErr, st)
		switch {
		case f.socket:
			if dialErr != nil || st.ConnectFailed != 0 {
				t.Errorf("with the socket unit: connect while stopped %v; %d connection attempts failed", dialErr, st.ConnectFailed)
			}
		case version >= 254:
			// FileDescriptorStorePreserve=yes keeps the store.
			if stored != "1" || dialErr != nil || st.ConnectFailed != 0 {
				t.Errorf("systemd %d: store %s while stopped, connect %v, %d connection attempts failed; want the store kept and nothing refused", version, stored, dialErr, st.ConnectFailed)
			}
		default:
			// Before 254 the store is emptied on stop: the port closes
			// until the next start. This is what the docs say; if it
			// changes, they must.
			if stored != "0" || dialErr == nil || st.Refused == 0 {
				t.Errorf("systemd %d: store %s while stopped, connect %v, %d refused; the docs say systemd before 254 empties the store on stop", version, stored, dialErr, st.Refused)
			}
		}
		f.checkStored(t, wantStored)
	})

	t.Run("full", func(t *testing.T) {
		f.full(t)
		f.checkStored(t, wantStored)
	})
	t.Run("flood", func(t *testing.T) {
		f.flood(t)
		f.checkStored(t, wantStored)
	})
}

// full: the service under LimitNOFILE=1024 (a drop-in, then a restart)
// holds 950 idle keep-alive connections under load when systemctl
// reloads it. The successor, under the same limit, keeps a margin for its
// own work and has room for some of them only: it takes what fits
// (CAPACITY, graceful/HANDOFF.md); the others stay with the old process,
// which answers each one's next request with "Connection: close" as it
// drains, then exits. No request fails, every idle connection has its
// next request answered by one process or the other, and those that moved
// stay open.
func (f *fixture) full(t *testing.T) {
	const idle = 950
	w := f.ld.Window()
	old := f.limitNoFile(t)
	held, err := flood.OpenIdle(f.addr, idle)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	f.m.Systemctl(t, "reload", service)
	next := f.m.MainPID(t, service)
	if next == old || next == 0 {
		t.Fatalf("reload: MainPID %d, was %d", next, old)
	}
	a, err := held.Next()
	t.Logf("%d idle connections after the reload from %d to %d: %v", idle, old, next, a)
	if err != nil {
		t.Fatal(err)
	}
	if err := flood.CheckSplit(a, idle, strconv.Itoa(old), strconv.Itoa(next)); err != nil {
		t.Error(err)
	}
	f.awaitJournal(t, fmt.Sprintf("exit pid=%d ", old), 1)
	if a, err := held.Next(); err != nil || a.By[strconv.Itoa(next)] != held.Len() || len(a.Closing) != 0 {
		t.Errorf("%d connections that moved, their next request: %v, %v; want each answered by %d and kept open", held.Len(), a, err, next)
	}
	st := w.Close()
	t.Logf("restart under the limit and the reload: %v", st)
	if st.Failed != 0 {
		t.Errorf("%d requests failed: %q", st.Failed, st.Errors)
	}
}

// limitNoFile puts the service under LimitNOFILE=1024 (a drop-in, then a
// restart, unless its main process is under it already) and returns its
// main process.
func (f *fixture) limitNoFile(t *testing.T) int {
	t.Helper()
	const want = "Max open files            1024                 1024"
	limits := func(pid int) string {
		l, err := f.m.Run("cat", fmt.Sprintf("/proc/%d/limits", pid))
		if err != nil {
			t.Fatalf("limits of MainPID %d: %v", pid, err)
		}
		return l
	}
	pid := f.m.MainPID(t, service)
	if strings.Contains(limits(pid), want) {
		return pid
	}
	f.install(t, "/etc/systemd/system/"+service+".d/nofile.conf", []byte("[Service]\nLimitNOFILE=1024\n"))
	f.m.Systemctl(t, "daemon-reload")
	f.m.Systemctl(t, "restart", service)
	pid = f.awaitNewMain(t, pid)
	if l := limits(pid); !strings.Contains(l, want) {
		t.Fatalf("MainPID %d, under LimitNOFILE=1024:\n%s", pid, l)
	}
	return pid
}

// flood: the service under LimitNOFILE=1024, flooded with 3,000
// connections that hold on, out of descriptors, is reloaded: systemctl
// reload succeeds with the flood holding (the old process starts its
// successor with its spare descriptors, accepts the -reload command and
// the successor with its reserve; the successor holds its accepts while
// the connections it has room for arrive), and once the flood ends the
// new main process answers within 5 s, with no rollback.
func (f *fixture) flood(t *testing.T) {
	old := f.limitNoFile(t)
	fl := flood.Start(t, f.addr, 3000)
	// MainPID is a pid of the machine's PID namespace: count in there.
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := f.m.Run("sh", "-c", fmt.Sprintf("ls /proc/%d/fd | wc -l", old))
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		if err == nil && n >= 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("MainPID %d has %d descriptors open after 20 s of the flood (%v), want 1000", old, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rollbacks := strings.Count(f.m.Journal(service), "rollback pid=")
	start := time.Now()
	if out, err := f.m.Run("timeout", "60", "systemctl", "reload", service); err != nil {
		j := f.m.Journal(service)
		t.Fatalf("systemctl reload with the flood holding: %v\n%s\njournal:\n%s", err, out, j[max(0, len(j)-6000):])
	}
	next := f.m.MainPID(t, service)
	if next == old || next == 0 {
		t.Fatalf("reload: MainPID %d, was %d", next, old)
	}
	t.Logf("reloaded %d -> %d in %v, the flood holding", old, next, time.Since(start).Round(time.Millisecond))
	if n := fl.End(); n < 1100 {
		t.Errorf("the flood held only %d connections: the service did not run out of descriptors", n)
	}
	f.awaitJournal(t, fmt.Sprintf("exit pid=%d ", old), 1)
	flood.AwaitProbe(t, f.addr, func(addr string) error {
		got, err := instance(addr)
		if err == nil && got != strconv.Itoa(next) {
			err = fmt.Errorf("answered by %s, want the new MainPID %d", got, next)
		}
		return err
	})
	if n := strings.Count(f.m.Journal(service), "rollback pid=") - rollbacks; n != 0 {
		t.Errorf("%d rollbacks", n)
	}
}

// start boots a machine, installs the example and its units (the port
// changed to a free one), starts the service and load against it.
func start(t *testing.T, withSocket bool) *fixture {
	m := systemdtest.Boot(t)
	built := proc.BuildT(t, t.TempDir(), "github.com/fdpass/fdpass/examples/httpserver")
	good, err := os.ReadFile(built)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{m: m, addr: freeAddr(t), good: good, socket: withSocket}
	f.install(t, binary, good)
	_, port, _ := net.SplitHostPort(f.addr)
	// Only the port changes: the units listen on every address, as
	// shipped, and the clients reach them on the loopback.
	f.installUnit(t, service, "-listen :8080", "-listen :"+port)
	if withSocket {
		f.installUnit(t, socket, "ListenStream=8080", "ListenStream="+port)
	}
	m.Systemctl(t, "daemon-reload")
	if withSocket {
		m.Systemctl(t, "start", socket)
	}
	m.Systemctl(t, "start", service)
	pid := m.MainPID(t, service)
	if pid == 0 {
		t.Fatalf("%s started without a main process", service)
	}
	t.Logf("systemd %d, %s serving %s as MainPID %d (port %s)", m.Version(t), service, f.addr, pid, port)
	f.ld, err = load.Start(load.Options{Addr: f.addr, KeepAlive: 16, OneShot: 4, Timeout: 10 * time.Second, Pause: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st := f.ld.Stop()
		t.Logf("load over the whole test: %v", st)
		if j := m.Journal(service); strings.Contains(j, "WARNING: DATA RACE") {
			t.Errorf("a process of %s reported a data race:\n%s", service, j)
		}
	})
	if _, err := f.ld.AwaitInstance(strconv.Itoa(pid), settle); err != nil {
		t.Fatal(err)
	}
	return f
}

// installUnit installs the unit of this directory with old replaced by
// new, which it must contain.
func (f *fixture) installUnit(t *testing.T, name, old, new string) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s has no %q to change", name, old)
	}
	f.install(t, "/etc/systemd/system/"+name, []byte(strings.Replace(string(b), old, new, 1)))
}

func (f *fixture) install(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := f.m.WriteFile(name, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// awaitJournal waits until the service's journal holds want lines with s.
func (f *fixture) awaitJournal(t *testing.T, s string, want int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := strings.Count(f.m.Journal(service), s)
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d journal lines with %q after 15s, want %d", got, s, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkStored checks how many descriptors the service's store holds.
func (f *fixture) checkStored(t *testing.T, want string) {
	t.Helper()
	if got := f.m.Show(t, service, "NFileDescriptorStore"); got != want {
		t.Errorf("NFileDescriptorStore=%s, want %s", got, want)
	}
}

// awaitNewMain waits until the service is active with a main process
// other than old that answers every client, and returns it.
func (f *fixture) awaitNewMain(t *testing.T, old int) int {
	t.Helper()
	deadline := time.Now().Add(settle)
	for {
		pid := f.m.MainPID(t, service)
		if pid != 0 && pid != old && f.m.Show(t, service, "ActiveState") == "active" {
			if _, err := f.ld.AwaitInstance(strconv.Itoa(pid), settle); err != nil {
				t.Fatal(err)
			}
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new main process within %v (MainPID %d, was %d)", settle, pid, old)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// get sends one request on a new connection and returns the instance that
// answered.
func (f *fixture) get(t *testing.T) string {
	t.Helper()
	inst, err := instance(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

// instance sends one request to addr on a new connection and returns the
// instance that answered.
func instance(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return resp.Header.Get("X-Instance"), nil
}

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
