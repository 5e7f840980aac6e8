package proc_test

import (
	"debug/buildinfo"
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

// TestBuildFails: a package that does not build is an error.
func TestBuildFails(t *testing.T) {
	if _, err := proc.Build(t.TempDir(), "github.com/fdpass/fdpass/examples/internal/proc/testdata/nosuchpackage"); err == nil {
		t.Fatal("built a package that does not exist")
	}
}
