//go:build linux

package kinds

// PathStats says how VerifyAllFrom checked a batch.
type PathStats struct {
	OneCall int   // TCP and UDP kinds, one getsockopt(2) each
	Each    int   // other kinds one at a time, no ring wanted
	Ring    int   // answered by the ring
	Behind  int   // given to the ring, then checked one at a time
	RingErr error // why the ring was refused or stopped, if it was
}

// MinRingBatch is the number of descriptors of kinds other than TCP and
// UDP from which VerifyAll uses a ring.
const MinRingBatch = minRingBatch

// VerifyAllFrom is VerifyAll with the ring used from ringMin descriptors
// of the kinds that take it on (0: always; a larger number than the batch:
// never), reporting the paths taken.
func VerifyAllFrom(fds []int, want []Kind, ringMin int) (int, PathStats, error) {
	var st pathStats
	i, err := verifyAllFrom(fds, want, ringMin, &st)
	return i, PathStats{st.oneCall, st.each, st.ring, st.behind, st.ringErr}, err
}
