//go:build linux

package kinds

import (
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Batch verification through io_uring.
//
// A system call costs about a microsecond on the virtual machines this
// project runs on, five times what the kernel spends passing a descriptor.
// One at a time, TCP and UDP sockets are checked with one getsockopt(2)
// each and every other kind with several calls. With io_uring (Linux 6.7
// and later: IORING_OP_URING_CMD with SOCKET_URING_OP_GETSOCKOPT) the four
// socket options that name a socket's kind are read for hundreds of
// descriptors per system call, at about a tenth of a microsecond each.
// Where io_uring is missing or refused (older kernels, seccomp profiles
// that forbid it), or for a descriptor declared a socket that is not one,
// the descriptor gets the one-at-a-time check instead; the answer is the
// same either way. Descriptors of the other kinds (files, directories,
// devices, namespaces) are always checked one at a time: they need a
// statx each, which io_uring hands to a worker thread, and on a 2-core
// virtual machine a ring took 1.17-1.41x the time of one at a time (on
// every processor) for 1,024 regular files, 0.96-1.22x for 4,096 and
// 0.94-1.15x for 10,000 (BenchmarkVerifyAllCold, 3 runs): it never won.

// minRingSockets is the number of system calls that checking the
// descriptors declared sockets one at a time would take, from which they
// are checked through a ring instead: one for each TCP or UDP socket, four
// for each other socket (see socketCalls). Through a ring each takes a
// receive that only peeks (to be sure it is a socket) and four socket
// options, all answered inline; the ring costs 50-130 µs to set up and
// tear down, more on a thread new to io_uring. One at a time, that many
// are checked on every processor (spread). On a 2-core virtual machine,
// for fresh descriptors checked from a thread of their own
// (BenchmarkVerifyAllCold, as in a process that has just received them;
// 3 runs), the ring took 1.10-1.16x the time of one at a time for 1,024
// TCP listeners, 1.06-1.23x for 2,048, 0.82-0.89x for 4,096 and
// 0.93-1.02x for 10,000; for unix connections 0.40-0.66x at 1,024 (4,096
// calls) and 0.46-0.47x at 10,000; for a mix of every socket kind
// 0.64-0.74x at 1,024 and 0.50-0.56x at 10,000. For duplicates of one
// socket the ring does better still: checks one at a time from two
// processors contend for the socket's one count of references.
const minRingSockets = 4096

// socketCalls is the number of system calls Verify takes for a socket of
// kind k that is what it is declared.
func socketCalls(k Kind) int {
	if oneCall(k) {
		return 1
	}
	return len(sockOpts)
}

// sockOpts are the SOL_SOCKET options read for each socket, in order.
var sockOpts = [4]int{unix.SO_DOMAIN, unix.SO_TYPE, unix.SO_PROTOCOL, unix.SO_ACCEPTCONN}

// pathStats records how verifyAll checked a batch, so that tests can tell
// which path ran.
type pathStats struct {
	oneCall int   // TCP and UDP kinds one at a time: one getsockopt(2) each
	each    int   // every other kind one at a time: a few calls each
	spread  int   // of oneCall and each, those checked on several goroutines
	ring    int   // answered by the ring
	behind  int   // given to the ring, then checked one at a time
	ringErr error // why the ring was refused or stopped, if it was
}

func verifyAll(fds []int, want []Kind) (int, error) {
	var st pathStats
	return verifyAllFrom(fds, want, minRingSockets, &st)
}

// verifyAllFrom is verifyAll with the ring used from minRing system calls'
// worth of sockets (see minRingSockets), recording the paths taken in st.
func verifyAllFrom(fds []int, want []Kind, minRing int, st *pathStats) (int, error) {
	calls := 0
	for _, k := range want {
		if k.IsSocket() {
			calls += socketCalls(k)
		}
	}
	var each, ring []int
	if calls >= minRing {
		for i, k := range want {
			if k.IsSocket() {
				ring = append(ring, i)
			} else {
				each = append(each, i)
			}
		}
	}
	var first int
	var ferr error
	if ring == nil {
		first, ferr = verifyEach(fds, want, len(want), func(p int) int { return p }, st)
	} else {
		first, ferr = verifyEach(fds, want, len(each), func(p int) int { return each[p] }, st)
		// Of the sockets for the ring, only those before the first
		// failure found one at a time: a failure among them comes
		// first.
		if ferr != nil {
			n, _ := slices.BinarySearch(ring, first)
			ring = ring[:n]
		}
	}
	if len(ring) > 0 {
		if i, err := verifySome(fds, want, ring, st); err != nil {
			return i, err
		}
	}
	if ferr != nil {
		return first, ferr
	}
	return -1, nil
}

// oneCall reports whether Verify checks kind k with one system call.
func oneCall(k Kind) bool {
	return k == TCPListener || k == TCPConn || k == UDP
}

// verifyCalls is the number of system calls Verify takes for a descriptor
// of kind k that is what it is declared, counting one for those that are
// not sockets.
func verifyCalls(k Kind) int {
	if k.IsSocket() {
		return socketCalls(k)
	}
	return 1
}

// verifyEach checks fds[at(p)] against want[at(p)] one at a time, for each
// position p in [0, n) (at ascending), and returns the first failure, or
// -1. When they take minSpreadCalls system calls or more, the checks are
// spread over GOMAXPROCS goroutines.
func verifyEach(fds []int, want []Kind, n int, at func(int) int, st *pathStats) (int, error) {
	calls := 0
	for p := range n {
		calls += verifyCalls(want[at(p)])
	}
	workers := 1
	if calls >= minSpreadCalls {
		workers = runtime.GOMAXPROCS(0)
	}
	var ones, others atomic.Int64
	p, err := spread(n, workers, func(lo, hi int) (int, error) {
		var o, e int64
		defer func() { ones.Add(o); others.Add(e) }()
		for p := lo; p < hi; p++ {
			i := at(p)
			if oneCall(want[i]) {
				o++
			} else {
				e++
			}
			if err := Verify(fds[i], want[i]); err != nil {
				return p, err
			}
		}
		return -1, nil
	})
	st.oneCall += int(ones.Load())
	st.each += int(others.Load())
	if workers > 1 {
		st.spread += int(ones.Load() + others.Load())
	}
	if err != nil {
		return at(p), err
	}
	return -1, nil
}

// verifySome verifies fds[i] against want[i] for each i in idx (ascending)
// through a ring, or one at a time if no ring can be had, and returns the
// first failure.
func verifySome(fds []int, want []Kind, idx []int, st *pathStats) (int, error) {
	i, used, err := verifyRing(fds, want, idx, st)
	if used {
		return i, err
	}
	st.ringErr = err
	return verifyEach(fds, want, len(idx), func(p int) int { return idx[p] }, st)
}

// verifyRing is verifySome through a ring; used is false, with the reason
// in err, when no ring could be used.
func verifyRing(fds []int, want []Kind, idx []int, st *pathStats) (i int, used bool, err error) {
	r, err := newRing(ringSize(len(idx)))
	if err != nil {
		return 0, false, err
	}
	defer r.close()
	sf := make([]int, len(idx))
	sw := make([]Kind, len(idx))
	for j, i := range idx {
		if fds[i] == r.fd {
			// A number that was not open when VerifyAll was called,
			// now the ring's own: checked one at a time, after the
			// ring is closed, it is reported as not open, as Verify
			// would.
			return 0, false, errRingFD
		}
		sf[j], sw[j] = fds[i], want[i]
	}
	j, err := r.verify(sf, sw, st)
	if err != nil {
		return idx[j], true, err
	}
	return -1, true, nil
}

// errRingFD says that a ring was not used because its own descriptor
// number was among those to verify.
var errRingFD = errors.New("kinds: the ring's descriptor number is in the batch")

const (
	ringEntries          = 1024 // SQEs per ring: 256 descriptors of 4 options
	ioringOpUringCmd     = 46
	ioringOpRecv         = 27
	socketOpGetsockopt   = 2
	ioringSetupSubmitAll = 1 << 7
	ioringEnterGetEvents = 1 << 0
	ioringFeatSingleMmap = 1 << 0
	ioringOffSQRing      = 0
	ioringOffCQRing      = 0x8000000
	ioringOffSQEs        = 0x10000000
	sqeSize              = 64
	cqeSize              = 16
)

// ringParams is struct io_uring_params.
type ringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  [10]uint32 // head tail ring_mask ring_entries flags dropped array resv1 user_addr(2)
	cqOff                                                                  [10]uint32 // head tail ring_mask ring_entries overflow cqes flags resv1 user_addr(2)
}

type ring struct {
	fd             int
	sqMem, cqMem   []byte
	sqes           []byte
	sqHead, sqTail *uint32
	sqMask         uint32
	sqArray        unsafe.Pointer
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           unsafe.Pointer
	entries        uint32
}

func newRing(entries uint32) (*ring, error) {
	var p ringParams
	p.flags = ioringSetupSubmitAll
	fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if e != 0 {
		return nil, os.NewSyscallError("io_uring_setup", e)
	}
	r := &ring{fd: int(fd), entries: p.sqEntries}
	sqSize := int(p.sqOff[6]) + int(p.sqEntries)*4
	cqSize := int(p.cqOff[5]) + int(p.cqEntries)*cqeSize
	var err error
	if p.features&ioringFeatSingleMmap != 0 {
		sqSize = max(sqSize, cqSize)
		r.sqMem, err = unix.Mmap(r.fd, ioringOffSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		r.cqMem = r.sqMem
	} else {
		r.sqMem, err = unix.Mmap(r.fd, ioringOffSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err == nil {
			r.cqMem, err = unix.Mmap(r.fd, ioringOffCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		}
	}
	if err == nil {
		r.sqes, err = unix.Mmap(r.fd, ioringOffSQEs, int(p.sqEntries)*sqeSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	}
	if err != nil {
		r.close()
		return nil, os.NewSyscallError("mmap", err)
	}
	sq := unsafe.Pointer(&r.sqMem[0])
	cq := unsafe.Pointer(&r.cqMem[0])
	r.sqHead = (*uint32)(unsafe.Add(sq, p.sqOff[0]))
	r.sqTail = (*uint32)(unsafe.Add(sq, p.sqOff[1]))
	r.sqMask = *(*uint32)(unsafe.Add(sq, p.sqOff[2]))
	r.sqArray = unsafe.Add(sq, p.sqOff[6])
	r.cqHead = (*uint32)(unsafe.Add(cq, p.cqOff[0]))
	r.cqTail = (*uint32)(unsafe.Add(cq, p.cqOff[1]))
	r.cqMask = *(*uint32)(unsafe.Add(cq, p.cqOff[2]))
	r.cqes = unsafe.Add(cq, p.cqOff[5])
	return r, nil
}

func (r *ring) close() {
	if r.sqes != nil {
		unix.Munmap(r.sqes)
	}
	if r.cqMem != nil && &r.cqMem[0] != &r.sqMem[0] {
		unix.Munmap(r.cqMem)
	}
	if r.sqMem != nil {
		unix.Munmap(r.sqMem)
	}
	unix.Close(r.fd)
}

// ringSize is the number of SQEs of a ring for n descriptors: four for
// each (one round of submissions covers a probe of each descriptor, then
// four getsockopts for each socket among them), a power of two, at most
// ringEntries. Setting up a ring of 1,024 entries costs about 130 µs, of
// 64 entries 50 µs.
func ringSize(n int) uint32 {
	size := uint32(16)
	for int(size) < n*len(sockOpts) && size < ringEntries {
		size *= 2
	}
	return size
}

// submit queues n SQEs written by fill (which gets each SQE's index in the
// batch and its bytes), submits them and waits for all their completions,
// calling done with each completion's user data and result.
func (r *ring) submit(n int, fill func(j int, sqe []byte), done func(ud uint64, res int32)) error {
	tail := atomic.LoadUint32(r.sqTail)
	for j := range n {
		idx := (tail + uint32(j)) & r.sqMask
		sqe := r.sqes[int(idx)*sqeSize : int(idx+1)*sqeSize : int(idx+1)*sqeSize]
		clear(sqe)
		fill(j, sqe)
		*(*uint32)(unsafe.Add(r.sqArray, idx*4)) = idx
	}
	atomic.StoreUint32(r.sqTail, tail+uint32(n))
	for left := n; left > 0; {
		_, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(left), uintptr(left), ioringEnterGetEvents, 0, 0)
		if e != 0 && e != unix.EINTR {
			return os.NewSyscallError("io_uring_enter", e)
		}
		head := atomic.LoadUint32(r.cqHead)
		ctail := atomic.LoadUint32(r.cqTail)
		for ; head != ctail; head++ {
			cqe := unsafe.Add(r.cqes, uintptr(head&r.cqMask)*cqeSize)
			done(*(*uint64)(cqe), *(*int32)(unsafe.Add(cqe, 8)))
			left--
		}
		atomic.StoreUint32(r.cqHead, head)
	}
	return nil
}

// Results of the receive that probes a descriptor declared a socket:
// a socket answers it (nothing to peek, not connected, a listener); any
// other file fails it with ENOTSOCK before anything is read.
func sockAnswer(res int32) bool {
	switch -res {
	case 0, int32(unix.EAGAIN), int32(unix.ENOTCONN), int32(unix.EINVAL):
		return true
	}
	return res > 0
}

// probe fills, for the descriptors fds, all declared sockets, the four
// sockOpts in vals. ok[i] says that descriptor i was answered in full; the
// caller checks the others one at a time.
func (r *ring) probe(fds []int, vals []int32, ok []bool) error {
	// First make sure that socket commands go to sockets only: a
	// SOCKET_URING_OP_GETSOCKOPT sent to a device would reach whatever
	// command handler its driver has. Each descriptor is asked for a
	// receive of no bytes that only peeks and does not wait
	// (IORING_OP_RECV, MSG_PEEK|MSG_DONTWAIT): io_uring answers it
	// inline, without reading anything, and only a socket answers it.
	var none [1]byte
	err := r.submit(len(fds), func(j int, sqe []byte) {
		sqe[0] = ioringOpRecv
		putU32(sqe[4:], uint32(int32(fds[j])))
		putU64(sqe[16:], uint64(uintptr(unsafe.Pointer(&none[0]))))
		putU32(sqe[28:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		putU64(sqe[32:], uint64(j))
	}, func(ud uint64, res int32) {
		if ud < uint64(len(ok)) {
			ok[ud] = sockAnswer(res)
		}
	})
	runtime.KeepAlive(&none)
	if err != nil {
		return err
	}
	var socks []int // indexes into fds
	for j := range fds {
		if ok[j] {
			socks = append(socks, j)
			ok[j] = false // until every option has answered
		}
	}
	if len(socks) == 0 {
		return nil
	}
	answered := make([]uint8, len(fds))
	n := len(socks) * len(sockOpts)
	err = r.submit(n, func(j int, sqe []byte) {
		i, k := socks[j/len(sockOpts)], j%len(sockOpts)
		sqe[0] = ioringOpUringCmd
		putU32(sqe[4:], uint32(int32(fds[i])))
		putU32(sqe[8:], socketOpGetsockopt)
		putU32(sqe[16:], unix.SOL_SOCKET)
		putU32(sqe[20:], uint32(sockOpts[k]))
		putU64(sqe[32:], uint64(i*len(sockOpts)+k))
		putU32(sqe[44:], 4)
		putU64(sqe[48:], uint64(uintptr(unsafe.Pointer(&vals[i*len(sockOpts)+k]))))
	}, func(ud uint64, res int32) {
		// Success returns the option's length.
		if i := ud / uint64(len(sockOpts)); i < uint64(len(fds)) && res == 4 {
			answered[i]++
		}
	})
	// The kernel wrote into vals; keep it reachable until here.
	runtime.KeepAlive(vals)
	if err != nil {
		return err
	}
	for _, i := range socks {
		ok[i] = answered[i] == uint8(len(sockOpts))
	}
	return nil
}

func (r *ring) verify(fds []int, want []Kind, st *pathStats) (int, error) {
	// One round covers chunk descriptors (see ringSize).
	chunk := int(r.entries) / len(sockOpts)
	vals := make([]int32, chunk*len(sockOpts))
	ok := make([]bool, chunk)
	for start := 0; start < len(fds); start += chunk {
		part := fds[start:min(start+chunk, len(fds))]
		clear(ok)
		if st.ringErr == nil {
			if err := r.probe(part, vals, ok); err != nil {
				// The ring is no longer to be trusted: this
				// chunk and the rest are checked one at a time.
				clear(ok)
				st.ringErr = err
			}
		}
		for j, f := range part {
			i := start + j
			if !ok[j] {
				st.behind++
				if err := Verify(f, want[i]); err != nil {
					return i, err
				}
				continue
			}
			st.ring++
			if got := kindOf(vals[j*len(sockOpts):]); got != want[i] {
				return i, &MismatchError{Want: want[i], Got: got}
			}
		}
	}
	return -1, nil
}

// kindOf names a socket's kind from its four sockOpts.
func kindOf(v []int32) Kind {
	proto := 0
	if v[0] == unix.AF_INET || v[0] == unix.AF_INET6 || v[0] == unix.AF_SMC {
		proto = int(v[2])
	}
	return classifySocket(int(v[0]), int(v[1]), proto, v[3] != 0)
}

func putU32(b []byte, v uint32) { binary.NativeEndian.PutUint32(b, v) }
func putU64(b []byte, v uint64) { binary.NativeEndian.PutUint64(b, v) }
