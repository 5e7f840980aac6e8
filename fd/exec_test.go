package fd_test

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/internal/childtest"
)

// The duplicates fd makes are close-on-exec: a process the caller starts
// does not inherit them. The child gets the numbers and identities of the
// duplicates in FD_DUPS ("number=dev:ino,...") and reports each number that
// is open in it on the same file; the runtime of the child may well have
// opened something else under that number.
var _ = childtest.Register("fd-dups", func() error {
	for _, e := range strings.Split(os.Getenv("FD_DUPS"), ",") {
		num, want, _ := strings.Cut(e, "=")
		n, err := strconv.Atoi(num)
		if err != nil {
			return err
		}
		if id, err := fd.Identify(n); err == nil && id.String() == want {
			fmt.Printf("inherited %d\n", n)
		}
	}
	fmt.Println("done")
	return nil
})

func TestDuplicatesNotInherited(t *testing.T) {
	checkLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var dups []string
	add := func(n int) {
		id, err := fd.Identify(n)
		if err != nil {
			t.Fatal(err)
		}
		dups = append(dups, fmt.Sprintf("%d=%s", n, id))
	}
	d, err := fd.Dup(ln)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close(d)
	add(d)
	d2, err := fd.DupFD(d)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close(d2)
	add(d2)
	f, err := fd.DupFile(ln, "listener")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	add(int(f.Fd()))

	c := childtest.Start(t, "fd-dups", childtest.Options{Env: []string{"FD_DUPS=" + strings.Join(dups, ",")}})
	c.Expect("done")
	c.MustExit()
	for _, line := range c.Output() {
		if strings.HasPrefix(line, "inherited") {
			t.Errorf("child: %s (of %s)", line, strings.Join(dups, ","))
		}
	}
}
