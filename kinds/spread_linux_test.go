//go:build linux

package kinds

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestSpread runs spread with a check that fails at chosen positions and
// takes a random while over each run, on 1 to 8 workers: it must return
// the lowest failing position with that position's error, check every
// position before it exactly once, hand out each run at most once, and
// never call check outside [0, n) or (unless one worker or one run takes
// them all) across more than spreadRun positions.
func TestSpread(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, spreadRun - 1, spreadRun, spreadRun + 1, 5 * spreadRun, 1000} {
		for workers := 1; workers <= 8; workers++ {
			for round := range 8 {
				var fail []int
				switch round {
				case 0: // none
				case 1:
					if n > 0 {
						fail = []int{n - 1}
					}
				case 2:
					if n > 0 {
						fail = []int{0}
					}
				default:
					for range round - 2 {
						if n > 0 {
							fail = append(fail, rng.IntN(n))
						}
					}
				}
				what := fmt.Sprintf("n=%d workers=%d failing at %v", n, workers, fail)
				spreadCase(t, what, n, workers, fail, rng.Uint64())
			}
		}
	}
}

func spreadCase(t *testing.T, what string, n, workers int, fail []int, seed uint64) {
	t.Helper()
	fails := map[int]bool{}
	lowest := -1
	for _, p := range fail {
		fails[p] = true
		if lowest == -1 || p < lowest {
			lowest = p
		}
	}
	var mu sync.Mutex
	visits := make([]int, n)
	var bad []string
	i, err := spread(n, workers, func(lo, hi int) (int, error) {
		mu.Lock()
		if lo < 0 || hi > n || lo > hi || lo == hi && n > 0 || hi-lo > spreadRun && (workers > 1 && n > spreadRun) {
			bad = append(bad, fmt.Sprintf("check(%d, %d)", lo, hi))
		}
		mu.Unlock()
		// A random while, so that runs finish out of order.
		d := time.Duration(rand.New(rand.NewPCG(seed, uint64(lo))).IntN(50)) * time.Microsecond
		time.Sleep(d)
		runtime.Gosched()
		for p := lo; p < hi; p++ {
			mu.Lock()
			visits[p]++
			mu.Unlock()
			if fails[p] {
				return p, fmt.Errorf("position %d: %w", p, errSpreadTest)
			}
		}
		return -1, nil
	})
	if len(bad) > 0 {
		t.Errorf("%s: called %v", what, bad)
	}
	if lowest == -1 {
		if i != -1 || err != nil {
			t.Errorf("%s: spread = %d, %v; want -1, nil", what, i, err)
		}
	} else if want := fmt.Sprintf("position %d: %v", lowest, errSpreadTest); i != lowest || err == nil || err.Error() != want {
		t.Errorf("%s: spread = %d, %v; want %d, %q", what, i, err, lowest, want)
	}
	end := n
	if lowest != -1 {
		end = lowest + 1
	}
	for p, v := range visits {
		if p < end && v != 1 || v > 1 {
			t.Errorf("%s: position %d checked %d times", what, p, v)
			return
		}
	}
}

var errSpreadTest = errors.New("the test's failure")
