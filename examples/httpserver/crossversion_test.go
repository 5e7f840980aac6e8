package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/load"
	"github.com/fdpass/fdpass/examples/internal/proc"
)

// TestCrossVersion: a successor built from this tree takes over from a
// predecessor built from the pinned earlier commit, and the other way
// round, under keep-alive load, with connections migrating and not one
// request failing.
func TestCrossVersion(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Fatal("needs git, to build the example from an earlier commit")
	}
	top, err := exec.Command(git, "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("not in a git checkout: %v", err)
	}
	root := strings.TrimSpace(string(top))
	commit, err := exec.Command(git, "-C", root, "rev-parse", "--verify", "--quiet", pinnedShort+"^{commit}").Output()
	if err != nil {
		t.Fatalf("commit %s is not in this clone (a shallow clone? fetch the history): %v", pinnedShort, err)
	}
	dir := t.TempDir()
	old := buildAt(t, git, root, strings.TrimSpace(string(commit)), dir)
	cur := proc.BuildT(t, dir, "github.com/fdpass/fdpass/examples/httpserver")
	for _, tc := range []struct {
		name       string
		first, new string
	}{
		{"old to new", old, cur},
		{"new to old", cur, old},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "handoff.sock")
			args := []string{"-graceful", sock, "-listen", "127.0.0.1:0", "-drain", "10s"}
			first := proc.StartT(t, tc.first, args...)
			line, err := first.Await("ready", 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			ld, err := load.Start(load.Options{Addr: proc.Field(line, "addr"), KeepAlive: 16, OneShot: 2, Timeout: requestTimeout, Pause: pause})
			if err != nil {
				t.Fatal(err)
			}
			defer ld.Stop()
			if _, err := ld.AwaitInstance(strconv.Itoa(first.PID()), 30*time.Second); err != nil {
				t.Fatal(err)
			}
			second := proc.StartT(t, tc.new, args...)
			if _, err := second.Await("ready", 30*time.Second); err != nil {
				t.Fatal(err)
			}
			if _, err := first.Await("exit", 30*time.Second); err != nil {
				t.Fatal(err)
			}
			if _, err := ld.AwaitInstance(strconv.Itoa(second.PID()), 30*time.Second); err != nil {
				t.Fatal(err)
			}
			st := ld.Stop()
			t.Logf("%v", st)
			if st.Failed != 0 {
				t.Errorf("%d requests failed; first errors: %q", st.Failed, st.Errors)
			}
			if st.Migrated == 0 {
				t.Errorf("no connection migrated across versions: %v", st)
			}
		})
	}
}

// pinnedShort is an earlier commit of this repository (the last one
// before the handoff gained upgrade requests and admission): the handoff
// protocol's compatibility rule (graceful/HANDOFF.md) is held against it.
const pinnedShort = "922b089"

// buildAt builds examples/httpserver as it was at commit, from a copy of
// the tree at that commit, and returns the binary.
func buildAt(t *testing.T, git, root, commit, dir string) string {
	t.Helper()
	src := filepath.Join(dir, "src-"+commit[:7])
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	archive := exec.Command(git, "-C", root, "archive", commit)
	untar := exec.Command("tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	untar.Stdin = pipe
	if err := untar.Start(); err != nil {
		t.Fatal(err)
	}
	if err := archive.Run(); err != nil {
		t.Fatalf("git archive %s: %v", commit, err)
	}
	if err := untar.Wait(); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "httpserver-"+commit[:7])
	build := exec.Command("go", "build", "-o", bin, "./examples/httpserver")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the example at %s: %v\n%s", commit, err, out)
	}
	return bin
}
