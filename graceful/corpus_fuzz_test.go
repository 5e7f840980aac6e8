package graceful

import (
	"flag"
	"testing"

	"github.com/fdpass/fdpass/internal/fuzzcorpus"
)

// The named seed files under testdata/fuzz/<Target>/ are generated from the
// seed lists of this package's fuzz targets by
//
//	go test ./graceful -run '^TestFuzzCorpus$' -update-corpus
//
// and TestFuzzCorpus checks that they are still what the lists say. Files
// named by a hash are findings of the fuzzer, kept as regression entries.
var updateCorpus = flag.Bool("update-corpus", false, "rewrite the named seed files under testdata/fuzz")

// fuzzSeeds lets each target's file add its seed files: a function returns
// a map from "<Target>/<name>" to the target's arguments.
var fuzzSeeds []func() map[string][][]byte

func addFuzzSeeds(f func() map[string][][]byte) bool {
	fuzzSeeds = append(fuzzSeeds, f)
	return true
}

func TestFuzzCorpus(t *testing.T) {
	files := map[string][][]byte{}
	for _, s := range fuzzSeeds {
		for name, args := range s() {
			files[name] = args
		}
	}
	fuzzcorpus.Sync(t, files, *updateCorpus)
}
