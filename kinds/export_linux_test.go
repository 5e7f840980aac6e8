//go:build linux

package kinds

// PathStats says how VerifyAllFrom checked a batch.
type PathStats struct {
	OneCall int   // TCP and UDP kinds one at a time, one getsockopt(2) each
	Each    int   // every other kind one at a time
	Spread  int   // of OneCall and Each, those checked on several goroutines
	Ring    int   // answered by the ring
	Behind  int   // given to the ring, then checked one at a time
	RingErr error // why the ring was refused or stopped, if it was
}

// MinRingSockets is the number of system calls' worth of descriptors
// declared sockets from which VerifyAll uses a ring.
const MinRingSockets = minRingSockets

// MinSpreadCalls is the number of system calls that checking descriptors
// one at a time takes from which VerifyAll spreads the checks over
// GOMAXPROCS goroutines.
const MinSpreadCalls = minSpreadCalls

// VerifyAllFrom is VerifyAll with the ring used from ringMin system calls'
// worth of sockets (0: always; more than the batch's: never), reporting
// the paths taken.
func VerifyAllFrom(fds []int, want []Kind, ringMin int) (int, PathStats, error) {
	return verifyAllStats(fds, want, ringMin)
}

// VerifyAllPaths is VerifyAll, reporting the paths taken.
func VerifyAllPaths(fds []int, want []Kind) (int, PathStats, error) {
	return verifyAllStats(fds, want, minRingSockets)
}

func verifyAllStats(fds []int, want []Kind, minRing int) (int, PathStats, error) {
	var st pathStats
	i, err := verifyAllFrom(fds, want, minRing, &st)
	return i, PathStats{st.oneCall, st.each, st.spread, st.ring, st.behind, st.ringErr}, err
}
