package prefault

import (
	"os"
	"runtime"
	"syscall"
	"testing"
	"unsafe"
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
	Bytes(b)
	if unsupported.Load() {
		t.Skip("MADV_POPULATE_WRITE unsupported by this kernel (Linux 5.14+)")
	}
	if n := touch(b); n > pages/100 {
		t.Errorf("after Bytes, %d faults for %d pages", n, pages)
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
	Slice(s)
	if unsupported.Load() {
		t.Skip("MADV_POPULATE_WRITE unsupported by this kernel (Linux 5.14+)")
	}
	if f := touch(s); f > pages/100 {
		t.Errorf("after Slice, %d faults for %d pages", f, pages)
	}
	if s[0].a != 7 {
		t.Error("Slice changed the contents")
	}
	Slice([]item(nil))
	Slice(make([]struct{}, 10))
}
