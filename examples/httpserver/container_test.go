//go:build linux

package main_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/flood"
	"github.com/fdpass/fdpass/examples/internal/load"
	"github.com/fdpass/fdpass/examples/internal/proc"
	"github.com/fdpass/fdpass/internal/fdtest"
)

// TestContainer runs the server as a container runtime does, without
// one: as PID 1 of a PID namespace of its own (unshare --pid --fork
// --mount-proc), and as the only child of tini as PID 1, with
// FDPASS_SUPERVISE=1 (docker run --init). Each time, under strict
// keep-alive load, it is reloaded five times by SIGHUP to the namespace's
// PID 1 and five times by -reload run inside the namespace (nsenter), and
// not one request fails, nor is a connection closed, not even those with a
// request in hand at the takeover, which move after it (late): the namespace outlives every takeover, keeps no
// zombie and holds nothing but its init (and supervisor) and the
// generation that serves. SIGTERM to PID 1 then ends it, with status 0,
// within the drain time.
func TestContainer(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: unshare --pid and nsenter (CI runs as root)")
	}
	for _, tool := range []string{"unshare", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s (util-linux) is missing: %v", tool, err)
		}
	}
	dir := t.TempDir()
	bin := proc.BuildT(t, dir, "github.com/fdpass/fdpass/examples/httpserver")
	t.Run("pid1", func(t *testing.T) {
		runContainer(t, bin, nil)
	})
	t.Run("tini", func(t *testing.T) {
		tini, err := exec.LookPath("tini")
		if err != nil {
			t.Skip("tini is not installed (Debian package tini; .ci/run installs it)")
		}
		// The supervisor is tini's child: asked for, as PID 1 it is not.
		runContainer(t, bin, []string{"FDPASS_SUPERVISE=1"}, tini, "--")
	})
}

// containerDrain is the server's -drain: SIGTERM must end the namespace
// within it.
const containerDrain = 5 * time.Second

// awaitBusy waits for a slow request that the next takeover will find in
// the server's hands.
func awaitBusy(t *testing.T, slow *load.Load, n int) {
	t.Helper()
	if _, err := slow.AwaitSlowBusy(30 * time.Second); err != nil {
		t.Fatalf("takeover %d: %v", n, err)
	}
}

// awaitCount waits until in has written want lines that begin with word.
func awaitCount(t *testing.T, in *proc.Instance, word string, want int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for in.Count(word) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d %q lines after 15s, want %d", in.Count(word), word, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runContainer runs bin in a new PID namespace, under init (the command
// before bin in the namespace, if any), with env (variables) added to
// its environment.
func runContainer(t *testing.T, bin string, env []string, init ...string) {
	const keepAlive, oneShot, reloads = 16, 4, 5
	fdtest.WarmUp()
	fdtest.CheckLeaks(t)
	// An explicit handoff socket, in a directory the namespace's mount
	// namespace (--mount-proc makes one) shares with this one, where the
	// nsenter'd -reload finds it too.
	sock := filepath.Join(t.TempDir(), "handoff.sock")
	// A binary built with the race detector sleeps a second as it exits,
	// to let other threads finish their reports; the supervisor and the
	// generation would spend two of the drain time that way.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd := append([]string{"env", "GORACE=" + gorace}, env...)
	cmd = append(cmd, "unshare", "--pid", "--fork", "--mount-proc", "--kill-child")
	cmd = append(append(cmd, init...), bin, "-graceful", sock, "-listen", "127.0.0.1:0", "-drain", containerDrain.String())
	ns := proc.StartT(t, cmd[0], cmd[1:]...)
	line, err := ns.Await("ready", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	serving := proc.Field(line, "pid")
	// The namespace's PID 1: unshare's child (env execs unshare).
	pid1 := childOf(t, ns.PID())
	nsLink, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid1))
	if err != nil {
		t.Fatal(err)
	}
	base := namespace(pid1)
	base.drop(serving)
	t.Logf("namespace: PID 1 is %d here; %v and generation %s", pid1, base, serving)
	// The supervisor: PID 1, or the init's only child. What it holds
	// open (its report socket, a pidfd for the generation that serves)
	// must not grow with takeovers.
	sup := pid1
	if len(init) > 0 {
		sup = childOf(t, pid1)
	}
	supFDs := fdtest.CountOf(t, sup)

	ld, err := load.Start(load.Options{Addr: proc.Field(line, "addr"), KeepAlive: keepAlive, OneShot: oneShot, Timeout: requestTimeout, Pause: pause})
	if err != nil {
		t.Fatal(err)
	}
	defer ld.Stop()
	// Clients whose request is in hand at every takeover: their
	// connections move after the answer (a "late" line), never closed.
	slow, err := load.StartSlow(proc.Field(line, "addr"), load.SlowRequest+requestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Stop()
	for _, l := range []*load.Load{ld, slow} {
		if st, err := l.AwaitInstance(serving, 30*time.Second); err != nil {
			t.Fatalf("%v: %v", err, st)
		}
	}

	// takeover checks one reload: the successor serves every client, the
	// namespace holds its base and the successor and no zombie, and no
	// request failed.
	takeovers := 0
	takeover := func(n int, how string, w, sw *load.Window, next string) {
		t.Helper()
		if next == serving || next == "" {
			t.Fatalf("%s %d: successor %q, serving %s", how, n, next, serving)
		}
		for _, l := range []*load.Load{ld, slow} {
			if st, err := l.AwaitInstance(next, 30*time.Second); err != nil {
				t.Fatalf("%s %d: %v: %v", how, n, err, st)
			}
		}
		// The old generation says how many moved late once they all
		// have.
		takeovers++
		awaitCount(t, ns, "late", takeovers)
		awaitNamespace(t, pid1, base, next)
		fdtest.AwaitCountOf(t, sup, supFDs)
		st, sst := w.Close(), sw.Close()
		t.Logf("%s %d: generation %s: %v; slow clients: %v", how, n, next, st, sst)
		checkTakeover(t, n, st)
		checkTakeover(t, n, sst)
		serving = next
	}
	for i := range reloads {
		w, sw := ld.Window(), slow.Window()
		awaitBusy(t, slow, i+1)
		if err := syscall.Kill(pid1, syscall.SIGHUP); err != nil {
			t.Fatalf("SIGHUP to PID 1: %v", err)
		}
		l, err := ns.Await("ready", 30*time.Second)
		if err != nil {
			t.Fatalf("SIGHUP %d: %v", i+1, err)
		}
		takeover(i+1, "SIGHUP", w, sw, proc.Field(l, "pid"))
	}
	for i := range reloads {
		w, sw := ld.Window(), slow.Window()
		awaitBusy(t, slow, i+1)
		reload := exec.Command("nsenter", "-t", strconv.Itoa(pid1), "-p", "-m", "--", bin, "-graceful", sock, "-reload")
		var out, stderr bytes.Buffer
		reload.Stdout, reload.Stderr = &out, &stderr
		if err := reload.Run(); err != nil {
			t.Fatalf("-reload %d in the namespace: %v: %s", i+1, err, stderr.Bytes())
		}
		next := proc.Field(out.String(), "successor")
		l, err := ns.Await("ready", 30*time.Second)
		if err != nil {
			t.Fatalf("-reload %d: %v", i+1, err)
		}
		if p := proc.Field(l, "pid"); p != next {
			t.Fatalf("-reload %d said successor %s; %s is ready", i+1, next, p)
		}
		takeover(i+1, "-reload", w, sw, next)
	}
	sst := slow.Stop()
	st := ld.Stats()
	t.Logf("in all: %v; slow clients: %v", st, sst)
	for _, st := range []load.Stats{st, sst} {
		if st.Failed != 0 {
			t.Errorf("%d requests failed; first errors: %q", st.Failed, st.Errors)
		}
	}
	if len(st.Instances) != 2*reloads+1 {
		t.Errorf("%d generations answered, want %d: %v", len(st.Instances), 2*reloads+1, st.Instances)
	}

	// SIGTERM to PID 1, under load: the generation that serves drains
	// and exits 0, and so does the namespace.
	start := time.Now()
	if err := syscall.Kill(pid1, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := ns.Wait(containerDrain + 10*time.Second); err != nil {
		t.Fatalf("after SIGTERM: %v", err)
	}
	if took := time.Since(start); took > containerDrain {
		t.Errorf("SIGTERM took %v to end the namespace, more than the drain time %v", took, containerDrain)
	} else {
		t.Logf("SIGTERM ended the namespace in %v", took.Round(time.Millisecond))
	}
	for _, p := range allPIDs() {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p)); l == nsLink {
			t.Errorf("process %d of the namespace outlived it", p)
		}
	}
}

// TestContainerFull: the server, PID 1 of its namespace and limited to
// 1,024 descriptors (prlimit: both generations), holds 950 idle
// keep-alive connections under load when SIGHUP asks for a reload. The
// successor, under the same limit, keeps a margin for its own work (64
// descriptors and a sixteenth of the limit) and so has room for some of
// them only: it takes what fits (CAPACITY, graceful/HANDOFF.md), the
// others stay with the old generation, which answers each one's next
// request with "Connection: close" as it drains, and exits. No request
// fails, every idle connection has its next request answered by one
// generation or the other, those that moved stay open, and the namespace
// holds the new generation and no zombie. (Without CAPACITY the successor
// takes all of them and is left with about 50 descriptors to accept with;
// the test fails.)
func TestContainerFull(t *testing.T) {
	const idle = 950
	fdtest.WarmUp()
	fdtest.CheckLeaks(t)
	bin := proc.BuildT(t, t.TempDir(), "github.com/fdpass/fdpass/examples/httpserver")
	ns, line, pid1, base := limitedContainer(t, bin)
	old, addr := proc.Field(line, "pid"), proc.Field(line, "addr")

	ld, err := load.Start(load.Options{Addr: addr, KeepAlive: 16, OneShot: 4, Timeout: requestTimeout, Pause: pause})
	if err != nil {
		t.Fatal(err)
	}
	defer ld.Stop()
	held, err := flood.OpenIdle(addr, idle)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if st, err := ld.AwaitInstance(old, 30*time.Second); err != nil {
		t.Fatalf("%v: %v", err, st)
	}

	w := ld.Window()
	if err := syscall.Kill(pid1, syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP to PID 1: %v", err)
	}
	line, err = ns.Await("ready", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	next := proc.Field(line, "pid")
	a, err := held.Next()
	t.Logf("%d idle connections after the takeover from %s to %s: %v", idle, old, next, a)
	if err != nil {
		t.Fatal(err)
	}
	if err := flood.CheckSplit(a, idle, old, next); err != nil {
		t.Error(err)
	}
	// The old generation may have exited before the new one said ready.
	awaitCount(t, ns, "exit", 1)
	awaitNamespace(t, pid1, base, next)
	// Those that moved serve on.
	if a, err := held.Next(); err != nil || a.By[next] != held.Len() || len(a.Closing) != 0 {
		t.Errorf("%d connections that moved, their next request: %v, %v; want each answered by %s and kept open", held.Len(), a, err, next)
	}
	if st := w.Close(); st.Failed != 0 {
		t.Errorf("the load across the takeover: %v; %d requests failed: %q", st, st.Failed, st.Errors)
	} else {
		t.Logf("the load across the takeover: %v", st)
	}
	held.Close()
	ld.Stop()
	endContainer(t, ns, pid1)
}

// TestContainerFlood: the server, PID 1 of its namespace and limited to
// 1,024 descriptors (prlimit: both generations), is flooded with 3,000
// connections that hold on, out of descriptors, when SIGHUP asks for a
// reload. The successor, under the same limit, must be ready within 10 s
// with the flood holding, without a rollback: the predecessor accepts it
// through its reserve descriptor, and the successor holds its accepts
// while the connections it has room for arrive (AcceptWait). Once the
// flood ends the new generation answers within 5 s, the old one has
// exited, and the namespace holds no zombie.
func TestContainerFlood(t *testing.T) {
	bin := proc.BuildT(t, t.TempDir(), "github.com/fdpass/fdpass/examples/httpserver")
	ns, line, pid1, base := limitedContainer(t, bin)
	addr := proc.Field(line, "addr")
	serving := childOf(t, pid1) // the generation, seen from here

	fl := flood.Start(t, addr, 3000)
	// Every descriptor under the limit taken: SIGHUP finds none left to
	// start the successor with (the flood's connections wait in the
	// backlog for any that frees).
	flood.AwaitDescriptors(t, serving, 1024)
	start := time.Now()
	if err := syscall.Kill(pid1, syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP to PID 1: %v", err)
	}
	line, err := ns.Await("ready", 10*time.Second)
	if err != nil {
		t.Fatalf("successor of a server out of descriptors: %v", err)
	}
	t.Logf("successor ready %v after SIGHUP, the flood holding", time.Since(start).Round(time.Millisecond))
	next := proc.Field(line, "pid")
	if n := fl.End(); n < 1100 {
		t.Errorf("the flood held only %d connections: the server did not run out of descriptors", n)
	}
	awaitCount(t, ns, "exit", 1)
	awaitNamespace(t, pid1, base, next)
	flood.AwaitProbe(t, addr, get)
	if n := ns.Count("rollback"); n != 0 {
		t.Errorf("%d rollbacks", n)
	}
	if n := ns.Count("spares"); n != 1 {
		t.Errorf("the successor started on the spare descriptors %d times, want once: the server did not run out", n)
	}
	endContainer(t, ns, pid1)
}

// limitedContainer starts bin as runContainer does, but limited to 1,024
// descriptors (prlimit: the namespace and every generation in it). It
// returns the namespace, the first generation's ready line, PID 1 (a pid
// here) and the namespace's processes but the generation.
func limitedContainer(t *testing.T, bin string) (ns *proc.Instance, ready string, pid1 int, base nsProcs) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root: unshare --pid (CI runs as root)")
	}
	for _, tool := range []string{"unshare", "prlimit"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s (util-linux) is missing: %v", tool, err)
		}
	}
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	ns = proc.StartT(t, "prlimit", "--nofile=1024:1024", "--", "env", "GORACE="+gorace,
		"unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
		bin, "-graceful", filepath.Join(t.TempDir(), "handoff.sock"), "-listen", "127.0.0.1:0", "-drain", containerDrain.String())
	ready, err := ns.Await("ready", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pid1 = childOf(t, ns.PID())
	base = namespace(pid1)
	base.drop(proc.Field(ready, "pid"))
	return ns, ready, pid1, base
}

// endContainer ends the namespace by SIGTERM to its PID 1.
func endContainer(t *testing.T, ns *proc.Instance, pid1 int) {
	t.Helper()
	if err := syscall.Kill(pid1, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := ns.Wait(containerDrain + 10*time.Second); err != nil {
		t.Fatalf("after SIGTERM: %v", err)
	}
}

// childOf returns the pid of the only child of pid, once it has one.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, p := range allPIDs() {
			if _, ppid, _ := stat(p); ppid == pid {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d has no child", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// nsProcs maps the pids, in their own namespace, of the processes of a
// PID namespace to their state (R, S, Z, ...).
type nsProcs map[string]byte

func (m nsProcs) drop(pid string) { delete(m, pid) }

func (m nsProcs) String() string {
	var s []string
	for pid, state := range m {
		s = append(s, fmt.Sprintf("%s(%c)", pid, state))
	}
	slices.Sort(s)
	return "[" + strings.Join(s, " ") + "]"
}

// namespace returns the processes of the PID namespace whose init is pid1
// (a pid here), read from the namespace's own /proc (which --mount-proc
// mounted; PID 1's root leads there): their pids in the namespace, and
// their states, zombies included.
func namespace(pid1 int) nsProcs {
	root := "/proc/" + strconv.Itoa(pid1) + "/root/proc"
	ents, _ := os.ReadDir(root)
	m := nsProcs{}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if st, _, ok := statFile(root + "/" + e.Name() + "/stat"); ok {
			m[e.Name()] = st
		}
	}
	return m
}

// awaitNamespace waits until the namespace holds base and serving and
// nothing else, none of them a zombie.
func awaitNamespace(t *testing.T, pid1 int, base nsProcs, serving string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		m := namespace(pid1)
		ok := len(m) == len(base)+1 && m[serving] != 0
		for pid, st := range m {
			if st == 'Z' || (pid != serving && base[pid] == 0) {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the namespace holds %v; want %v and the generation %s, no zombie", m, base, serving)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// allPIDs lists the processes /proc shows.
func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stat returns a process's state and parent; ok is false if it does not
// exist.
func stat(pid int) (state byte, ppid int, ok bool) {
	return statFile("/proc/" + strconv.Itoa(pid) + "/stat")
}

// statFile returns the state and parent that a /proc/PID/stat file says;
// ok is false if there is no such file.
func statFile(name string) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, 0, false
	}
	// After the command name, in parentheses that it may hold too.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 2 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0][0], ppid, true
}
