package prefault

import (
	"os"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

var pageSize = os.Getpagesize()

// unsupported is set once the kernel has refused MADV_POPULATE_WRITE.
var unsupported atomic.Bool

func populate(b []byte) {
	if unsupported.Load() {
		return
	}
	page := uintptr(pageSize)
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b))) &^ (page - 1)
	end := (uintptr(unsafe.Pointer(unsafe.SliceData(b))) + uintptr(len(b)) + page - 1) &^ (page - 1)
	// The pages around b belong to the same heap mapping, which is
	// writable; populating them changes nothing either.
	_, _, e := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_POPULATE_WRITE)
	runtime.KeepAlive(b)
	if e == unix.EINVAL {
		unsupported.Store(true)
	}
}
