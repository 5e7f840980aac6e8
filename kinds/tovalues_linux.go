package kinds

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/fdpass/fdpass/fd"
	"golang.org/x/sys/unix"
)

// Converting a socket costs ToListener eleven system calls: Verify, then
// os.NewFile (F_GETFL, and an epoll_ctl to register the file with the
// poller), net.FileListener (a duplicate, three to learn the socket,
// F_GETFL, epoll_ctl), and closing the file (epoll_ctl, close). Many at a
// time, the *os.File that net.File* wants can be a slot: one descriptor
// number held by a file that the poller never sees (it is made from a
// blocking eventfd), onto which each socket is duplicated with dup3(2) in
// turn. That leaves eight (seven for ToValuesVerified, which does not
// Verify), and the sockets' own descriptors are closed in runs, with a
// close_range(2) each.

// minSlotBatch is the number of sockets below which a slot (three system
// calls to make and close) does not pay.
const minSlotBatch = 8

// slot is a worker's private descriptor number, held by an *os.File that
// is not on the poller.
type slot struct {
	f  *os.File
	fd int
}

func newSlot() (*slot, error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("eventfd", err)
	}
	return &slot{f: os.NewFile(uintptr(efd), "slot"), fd: efd}, nil
}

func (s *slot) close() {
	if s != nil {
		s.f.Close()
	}
}

func toValues(fds []int, ks []Kind, names []string, check bool) ([]any, error) {
	n := len(fds)
	vals := make([]any, n)
	errs := make([]error, n)
	var next atomic.Int64
	var short atomic.Bool // the process ran out of descriptors
	var wg sync.WaitGroup
	workers := min(runtime.GOMAXPROCS(0), (n+closeRun-1)/closeRun)
	for range max(workers, 1) {
		wg.Go(func() {
			var s *slot
			// The sockets' own descriptors, closed a run at a time: with
			// all kept to the end, converting n sockets would need 2n
			// descriptors at once.
			var done []int
			defer func() {
				s.close()
				fd.CloseAll(done)
			}()
			// Runs of consecutive items, so that their descriptors
			// (consecutive as received) close with one call.
			for {
				start := int(next.Add(closeRun)) - closeRun
				if start >= n {
					return
				}
				for i := start; i < min(start+closeRun, n); i++ {
					v, kept, err := toValueVia(&s, n, fds[i], ks[i], nameAt(names, i), check)
					for try := 0; kept && errors.Is(err, syscall.EMFILE) && try < 100; try++ {
						// Out of descriptors: from now on every worker
						// closes each socket's own descriptor as soon as
						// it is converted, and this one tries again once
						// the others have had a turn.
						short.Store(true)
						fd.CloseAll(done)
						done = done[:0]
						runtime.Gosched()
						v, kept, err = toValueVia(&s, n, fds[i], ks[i], nameAt(names, i), check)
					}
					vals[i], errs[i] = v, err
					if kept {
						done = append(done, fds[i])
						if short.Load() {
							fd.CloseAll(done)
							done = done[:0]
						}
					}
				}
				fd.CloseAll(done)
				done = done[:0]
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			closeValues(vals)
			return nil, fmt.Errorf("kinds: %s: item %d: %w", funcName(check), i, err)
		}
	}
	return vals, nil
}

// funcName names the exported function that converts with or without
// checks.
func funcName(check bool) string {
	if check {
		return "ToValues"
	}
	return "ToValuesVerified"
}

// closeRun is how many items a worker converts before it closes their
// sockets' own descriptors together.
const closeRun = 32

// toValueVia converts one descriptor, sockets through the worker's slot
// (made on first use), checking its kind first if check is set. kept
// reports that fd is left open for the caller to close.
func toValueVia(s **slot, n, rawfd int, k Kind, name string, check bool) (v any, kept bool, err error) {
	var conv func(*os.File) (any, error)
	var what string
	switch k {
	case TCPListener, UnixListener:
		what, conv = "net.Listener", func(f *os.File) (any, error) { return net.FileListener(f) }
	case TCPConn, UnixConn:
		what, conv = "net.Conn", func(f *os.File) (any, error) { return net.FileConn(f) }
	case UDP, UnixDatagram:
		what, conv = "net.PacketConn", func(f *os.File) (any, error) { return net.FilePacketConn(f) }
	}
	if conv == nil || (n < minSlotBatch && check) {
		v, err := ToValue(rawfd, k, name)
		return v, false, err
	}
	fail := func(err error) (any, bool, error) {
		return nil, true, fmt.Errorf("%w: %s: %w", ErrConvert, what, err)
	}
	if n < minSlotBatch {
		f := os.NewFile(uintptr(rawfd), what)
		v, err := conv(f)
		f.Close()
		if err != nil {
			return nil, false, fmt.Errorf("%w: %s: %w", ErrConvert, what, err)
		}
		return v, false, nil
	}
	if *s == nil {
		if *s, err = newSlot(); err != nil {
			return fail(err)
		}
	}
	if check {
		if err := Verify(rawfd, k); err != nil {
			return fail(err)
		}
	}
	if err := unix.Dup3(rawfd, (*s).fd, unix.O_CLOEXEC); err != nil {
		return fail(os.NewSyscallError("dup3", err))
	}
	if v, err = conv((*s).f); err != nil {
		return fail(err)
	}
	return v, true, nil
}
