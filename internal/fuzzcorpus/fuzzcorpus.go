// Package fuzzcorpus keeps the named seed files of the project's fuzz
// targets in step with the seed lists in their tests. A target's corpus is
// testdata/fuzz/<Target>/ in its package; the files named by a seed list
// are generated, and those named by a 16-digit hash are the fuzzer's
// findings, kept as regression entries.
//
// Every argument of a target whose corpus this package writes is a []byte.
package fuzzcorpus

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// findingName matches the names the fuzzer gives the inputs it writes.
var findingName = regexp.MustCompile(`^[0-9a-f]{16}$`)

// File encodes arguments, all []byte, in Go's corpus file format.
func File(args ...[]byte) []byte {
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		fmt.Fprintf(&b, "[]byte(%q)\n", a)
	}
	return []byte(b.String())
}

// Sync checks that testdata/fuzz/ in the current directory (the package's,
// in a test) holds exactly the named seed files files lists, each mapping
// "<Target>/<name>" to the target's arguments; with update it rewrites
// them instead, and removes the named files no list holds any more. Files
// named by a hash are left alone, and so are the directories of targets
// that files names none of (those of another platform, say).
func Sync(tb testing.TB, files map[string][][]byte, update bool) {
	tb.Helper()
	targets := map[string]bool{}
	for name := range files {
		targets[strings.SplitN(name, "/", 2)[0]] = true
	}
	paths, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "*", "*"))
	for _, path := range paths {
		target := filepath.Base(filepath.Dir(path))
		name := target + "/" + filepath.Base(path)
		if _, ok := files[name]; ok || !targets[target] || findingName.MatchString(filepath.Base(path)) {
			continue
		}
		if update {
			if err := os.Remove(path); err != nil {
				tb.Fatal(err)
			}
			continue
		}
		tb.Errorf("%s is not in any seed list (run with -update-corpus)", path)
	}
	for name, args := range files {
		path := filepath.Join("testdata", "fuzz", filepath.FromSlash(name))
		want := File(args...)
		if update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				tb.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				tb.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			tb.Errorf("%v (run with -update-corpus)", err)
			continue
		}
		if !bytes.Equal(got, want) {
			tb.Errorf("%s is out of date (run with -update-corpus)", path)
		}
	}
}
