package prefault

import (
	"os"
	"runtime"
	"syscall"
	"testing"
)

func minorFaults(t *testing.T) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_THREAD, &ru); err != nil {
		t.Fatal(err)
	}
	return ru.Minflt
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
