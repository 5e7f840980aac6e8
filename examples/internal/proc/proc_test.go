package proc_test

import (
	"debug/buildinfo"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/proc"
)

// raced reports whether bin was built with the race detector.
func raced(t *testing.T, bin string) bool {
	t.Helper()
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// TestRaceDetectorFollows: the examples are built with the race detector
// exactly when the tests run under it, and a race an example reports is
// an error of its Instance.
func TestRaceDetectorFollows(t *testing.T) {
	dir := t.TempDir()
	bin := proc.BuildT(t, dir, "github.com/fdpass/fdpass/examples/internal/proc/testdata/racy")
	if got := raced(t, bin); got != raceEnabled {
		t.Fatalf("example built with -race=%t, want %t", got, raceEnabled)
	}
	in, err := proc.Start(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Kill()
	if _, err := in.Await("ready", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	err = in.Wait(30 * time.Second)
	if !raceEnabled {
		if err != nil || in.Races() != nil {
			t.Fatalf("without the race detector: %v, %v", err, in.Races())
		}
		return
	}
	if in.Races() == nil || err == nil || !strings.Contains(err.Error(), "data race") {
		t.Fatalf("a racy example: Wait returned %v, Races %v; want the race reported", err, in.Races())
	}
}

// fakeTB records what BuildT and StartT report.
type fakeTB struct {
	cleanups []func()
	fatal    []string
	errors   []string
}

func (f *fakeTB) Helper()           {}
func (f *fakeTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) Errorf(format string, args ...any) {
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = append(f.fatal, fmt.Sprintf(format, args...))
}

// TestBuildFails: a package that does not build is an error, and fails
// the test that builds it (BuildT cannot skip).
func TestBuildFails(t *testing.T) {
	const pkg = "github.com/fdpass/fdpass/examples/internal/proc/testdata/broken"
	if _, err := proc.Build(t.TempDir(), pkg); err == nil {
		t.Fatal("built a package that does not compile")
	}
	var f fakeTB
	proc.BuildT(&f, t.TempDir(), pkg)
	if len(f.fatal) != 1 || !strings.Contains(f.fatal[0], "cannot build the example") {
		t.Fatalf("BuildT of a broken package reported %q, want one fatal error", f.fatal)
	}
}
