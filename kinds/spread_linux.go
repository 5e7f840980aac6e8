package kinds

import (
	"sync"
	"sync/atomic"
)

// Checking one descriptor at a time costs a system call or more each,
// about a microsecond on the virtual machines this project runs on, and
// nothing ties one check to another: a batch of many is checked on every
// processor at once (spread), in runs of spreadRun descriptors.

// minSpreadCalls is the number of system calls that checking a batch one
// at a time takes from which the checks are spread over the processors:
// below it, waking another thread costs more than it saves. On a 2-core
// virtual machine, for fresh descriptors checked from a thread of their
// own (BenchmarkVerifyAllCold, one run before and after), spreading 128
// TCP listeners took 1.75x the time of one thread, 512 0.96x, 1,024 0.74x
// and 10,000 0.55x; 128 unix connections (512 calls) 1.0x, 512 of them
// 0.68x. Duplicates of one socket are the exception: checks of them from
// two processors contend for the socket's one count of references, and
// take longer than on one.
const minSpreadCalls = 512

// spreadRun is how many consecutive descriptors a worker checks before it
// takes the next run.
const spreadRun = 32

// spread runs check over the positions [0, n) in runs of spreadRun, on up
// to workers goroutines, and returns the lowest position at which a check
// failed, with its error, or -1. check(lo, hi) checks positions lo to
// hi-1 in order and returns the first that failed, or -1. A run that
// starts after a known failure is not checked: every position before the
// lowest failure is.
func spread(n, workers int, check func(lo, hi int) (int, error)) (int, error) {
	if workers <= 1 || n <= spreadRun {
		return check(0, n)
	}
	var (
		next   atomic.Int64
		lowest atomic.Int64 // the lowest failure so far, or n
		mu     sync.Mutex
		ferr   error
		wg     sync.WaitGroup
	)
	lowest.Store(int64(n))
	for range min(workers, (n+spreadRun-1)/spreadRun) {
		wg.Go(func() {
			for {
				lo := int(next.Add(spreadRun)) - spreadRun
				if lo >= n || int64(lo) >= lowest.Load() {
					return
				}
				i, err := check(lo, min(lo+spreadRun, n))
				if err == nil {
					continue
				}
				mu.Lock()
				if int64(i) < lowest.Load() {
					lowest.Store(int64(i))
					ferr = err
				}
				mu.Unlock()
				return
			}
		})
	}
	wg.Wait()
	if ferr != nil {
		return int(lowest.Load()), ferr
	}
	return -1, nil
}
