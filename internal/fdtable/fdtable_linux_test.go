package fdtable_test

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/fdpass/fdpass/internal/fdtable"
	"github.com/fdpass/fdpass/internal/fdtest"
	"golang.org/x/sys/unix"
)

// tableSize returns the number of slots in the process's descriptor table
// (FDSize in /proc/self/status).
func tableSize(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "FDSize:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no FDSize in /proc/self/status")
	return 0
}

// lowestFree returns the lowest free descriptor number.
func lowestFree(t *testing.T) int {
	t.Helper()
	fd, err := unix.FcntlInt(0, unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	return fd
}

// TestReserve: after Reserve, n descriptors fit above the lowest free
// number without the table growing again, and no descriptor is left open.
// The sizes grow from test to test, as the table never shrinks.
func TestReserve(t *testing.T) {
	fdtest.CheckLeaks(t)
	for _, n := range []int{2000, 5000} {
		before := tableSize(t)
		want := lowestFree(t) + n
		if before >= want {
			t.Fatalf("table of %d slots already holds %d more descriptors", before, n)
		}
		fdtable.Reserve(0, n)
		if got := tableSize(t); got < want {
			t.Errorf("Reserve(%d): table of %d slots, want at least %d (was %d)", n, got, want, before)
		}
	}
}

// TestReserveFew: below Min, Reserve leaves the table as it is, even where
// the descriptors would not fit in it.
func TestReserveFew(t *testing.T) {
	fdtest.CheckLeaks(t)
	size := tableSize(t)
	// Fill the table up to a few slots from its end.
	for lowestFree(t) < size-8 {
		fd, err := unix.FcntlInt(0, unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
	}
	fdtable.Reserve(0, fdtable.Min-1)
	if got := tableSize(t); got != size {
		t.Errorf("Reserve(%d) with 8 free slots: table of %d slots, was %d", fdtable.Min-1, got, size)
	}
}

// TestReserveLimit: the table grows as far as RLIMIT_NOFILE allows, no
// further, and Reserve does not fail when asked for more.
func TestReserveLimit(t *testing.T) {
	fdtest.CheckLeaks(t)
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	limit := uint64(tableSize(t)) * 2
	if old.Max < limit {
		t.Skipf("hard RLIMIT_NOFILE %d is below %d", old.Max, limit)
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
	// lo+n fits under the limit, the spare room does not.
	n := int(limit) - lowestFree(t) - 8
	fdtable.Reserve(0, n)
	got := tableSize(t)
	if got < int(limit) || got > int(limit)*2 {
		t.Errorf("Reserve(%d) under RLIMIT_NOFILE %d: table of %d slots", n, limit, got)
	}
}
