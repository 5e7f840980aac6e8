package prefault

import (
	"os"
	"runtime"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func minorFaults(t *testing.T) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_THREAD, &ru); err != nil {
		t.Fatal(err)
	}
	return int64(ru.Minflt)
}

// TestBytesPopulates: after Bytes, writing to every page of fresh memory
// takes (almost) no page faults; without it, one per page.
func TestBytesPopulates(t *testing.T) {
	const size = 8 << 20
	pages := int64(size / os.Getpagesize())
	touch := func(b []byte) int64 {
		before := minorFaults(t)
		for i := 0; i < len(b); i += os.Getpagesize() {
			b[i] = 1
		}
		return minorFaults(t) - before
	}
	fresh := func() []byte {
		b, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Munmap(b) })
		return b
	}
	// RUSAGE_THREAD counts this thread only: stay on it.
	lockThread(t)
	if n := touch(fresh()); n < pages/2 {
		t.Fatalf("fresh memory took %d faults for %d pages; cannot tell", n, pages)
	}
	b := fresh()
	before := resident(t, b)
	Bytes(b)
	if unsupported.Load() {
		t.Skip("MADV_POPULATE_WRITE unsupported by this kernel (Linux 5.14+)")
	}
	checkPopulated(t, "Bytes", b, before, func() int64 { return touch(b) })
}

// resident counts the pages of b that are in memory.
func resident(t *testing.T, b []byte) int64 {
	t.Helper()
	vec := make([]byte, (len(b)+os.Getpagesize()-1)/os.Getpagesize())
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		t.Fatal("mincore:", e)
	}
	var n int64
	for _, v := range vec {
		n += int64(v & 1)
	}
	return n
}

// checkPopulated asserts that every page of the fresh mapping b, none of
// which was resident before, is resident now, and that writing to each of
// them costs (almost) no page faults. The fault count is of this thread,
// which also takes the odd fault of its own (a signal, the race
// detector), so a tenth of the pages is the bound: unpopulated memory
// takes one fault per page.
func checkPopulated(t *testing.T, what string, b []byte, before int64, touch func() int64) {
	t.Helper()
	pages := int64(len(b) / os.Getpagesize())
	if before != 0 {
		t.Fatalf("%d of %d pages of a fresh mapping already resident; cannot tell", before, pages)
	}
	if n := resident(t, b); n != pages {
		t.Errorf("after %s, %d of %d pages resident", what, n, pages)
	}
	if n := touch(); n > pages/10 {
		t.Errorf("after %s, %d faults for %d pages", what, n, pages)
	}
}

// TestBytesKeepsContents: populating changes nothing, and small or empty
// slices are fine.
func TestBytesKeepsContents(t *testing.T) {
	b := make([]byte, 1<<20+123)
	for i := range b {
		b[i] = byte(i * 7)
	}
	Bytes(b)
	Bytes(b[:0])
	Bytes(nil)
	Bytes(make([]byte, 10))
	for i := range b {
		if b[i] != byte(i*7) {
			t.Fatalf("byte %d changed", i)
		}
	}
}

func lockThread(t *testing.T) {
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
}

// TestSlicePopulates: Slice populates the memory under a slice of structs
// as Bytes does its bytes, and leaves the contents alone.
func TestSlicePopulates(t *testing.T) {
	type item struct {
		a, b int64
		n    [48]byte
	}
	const size = 4 << 20
	pages := int64(size / os.Getpagesize())
	fresh := func() []item {
		b, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Munmap(b) })
		return unsafe.Slice((*item)(unsafe.Pointer(&b[0])), size/unsafe.Sizeof(item{}))
	}
	touch := func(s []item) int64 {
		before := minorFaults(t)
		for i := range s {
			s[i].n[0] = 1
		}
		return minorFaults(t) - before
	}
	lockThread(t)
	if f := touch(fresh()); f < pages/2 {
		t.Fatalf("fresh memory took %d faults for %d pages; cannot tell", f, pages)
	}
	s := fresh()
	s[0].a = 7
	mem := unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), size)
	before := resident(t, mem) - 1 // the page s[0].a = 7 wrote
	Slice(s)
	if unsupported.Load() {
		t.Skip("MADV_POPULATE_WRITE unsupported by this kernel (Linux 5.14+)")
	}
	checkPopulated(t, "Slice", mem, before, func() int64 { return touch(s) })
	if s[0].a != 7 {
		t.Error("Slice changed the contents")
	}
	Slice([]item(nil))
	Slice(make([]struct{}, 10))
}
