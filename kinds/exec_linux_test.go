//go:build linux

package kinds_test

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"

	"github.com/fdpass/fdpass/internal/childtest"
	"github.com/fdpass/fdpass/kinds"
)

// A descriptor inherited through exec is detected from itself, whatever
// the parent called it: the child detects descriptors 3 to 3+KINDS_N-1 and
// prints "fd N KIND".
var _ = childtest.Register("kinds-detect", func() error {
	n, err := strconv.Atoi(os.Getenv("KINDS_N"))
	if err != nil {
		return err
	}
	for i := 3; i < 3+n; i++ {
		info, err := kinds.Detect(i)
		if err != nil {
			return fmt.Errorf("Detect(%d): %w", i, err)
		}
		if err := kinds.Verify(i, info.Kind); err != nil {
			return fmt.Errorf("Verify(%d, %v): %w", i, info.Kind, err)
		}
		fmt.Printf("fd %d %v\n", i, info.Kind)
	}
	return nil
})

func TestDetectInherited(t *testing.T) {
	checkLeaks(t)
	ln, c, _ := tcpPair(t, "tcp", "127.0.0.1:0", false)
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, udp)
	uln, uc, _ := unixPair(t, "unixpacket")
	file, err := os.Open(tempFile(t, "x"))
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, file)
	ns, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, ns)

	values := []struct {
		v    any
		want kinds.Kind
	}{
		{ln, kinds.TCPListener},
		{c, kinds.TCPConn},
		{udp, kinds.UDP},
		{uln, kinds.UnixListener},
		{uc, kinds.UnixConn},
		{file, kinds.File},
		{ns, kinds.NetNS},
	}
	var files []*os.File
	for i, v := range values {
		n, _, err := kinds.FromValue(v.v)
		if err != nil {
			t.Fatalf("value %d: %v", i, err)
		}
		f := kinds.ToFile(n, "inherited")
		closeAtEnd(t, f)
		files = append(files, f)
	}
	child := childtest.Start(t, "kinds-detect", childtest.Options{
		Env:   []string{"KINDS_N=" + strconv.Itoa(len(files))},
		Files: files,
	})
	for i, v := range values {
		want := fmt.Sprintf("fd %d %v", 3+i, v.want)
		if got := child.Expect(fmt.Sprintf("fd %d ", 3+i)); got != want {
			t.Errorf("child says %q, want %q", got, want)
		}
	}
	child.MustExit()
}
