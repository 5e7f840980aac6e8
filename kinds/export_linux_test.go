//go:build linux

package kinds

// PathStats says how VerifyAllFrom checked a batch.
type PathStats struct {
	OneCall int   // TCP and UDP kinds one at a time, one getsockopt(2) each
	Each    int   // other kinds one at a time, no ring wanted
	Ring    int   // answered by the ring
	Behind  int   // given to the ring, then checked one at a time
	RingErr error // why the ring was refused or stopped, if it was
}

// MinRingSockets and MinRingBatch are the numbers of descriptors declared
// sockets, and of the other kinds, from which VerifyAll uses a ring.
const (
	MinRingSockets = minRingSockets
	MinRingBatch   = minRingBatch
)

// VerifyAllFrom is VerifyAll with the ring used from ringMin descriptors
// of either class (0: always; a larger number than the batch: never),
// reporting the paths taken.
func VerifyAllFrom(fds []int, want []Kind, ringMin int) (int, PathStats, error) {
	return verifyAllStats(fds, want, ringMins{ringMin, ringMin})
}

// VerifyAllPaths is VerifyAll, reporting the paths taken.
func VerifyAllPaths(fds []int, want []Kind) (int, PathStats, error) {
	return verifyAllStats(fds, want, ringMins{minRingSockets, minRingBatch})
}

func verifyAllStats(fds []int, want []Kind, mins ringMins) (int, PathStats, error) {
	var st pathStats
	i, err := verifyAllFrom(fds, want, mins, &st)
	return i, PathStats{st.oneCall, st.each, st.ring, st.behind, st.ringErr}, err
}
