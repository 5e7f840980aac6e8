//go:build linux

package graceful_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/kinds"
	"github.com/vishvananda/netns"
)

var _ = registerRestartRole("netns-gen", netnsGeneration)

// netnsGeneration listens inside the named namespace NS_NAME through the
// Process, and reports the listener's identity and namespace.
func netnsGeneration() error {
	h, err := netns.GetFromName(os.Getenv("NS_NAME"))
	if err != nil {
		return err
	}
	defer h.Close()
	p, err := graceful.New(graceful.Options{Path: os.Getenv(envPath)})
	if err != nil {
		return err
	}
	defer p.Close()
	ln, err := p.ListenInNetNS(h, "tcp", "127.0.0.1:7777")
	if err != nil {
		return err
	}
	defer ln.Close()
	id, err := fd.IdentifyConn(ln)
	if err != nil {
		return err
	}
	lfd, err := fd.Dup(ln)
	if err != nil {
		return err
	}
	sockNS, err := kinds.SocketNetNS(lfd)
	fd.Close(lfd)
	if err != nil {
		return err
	}
	if err := p.Ready(); err != nil {
		return err
	}
	say("ready inherited=%t socket=%s netns=%s", p.Inherited(), id, sockNS)
	<-p.Exit()
	return nil
}

// TestListenInNetNS: a listener made inside a named network namespace
// passes to the next generation, which adopts it (same socket) by
// namespace and address.
func TestListenInNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("needs ip from iproute2")
	}
	restartCheckLeaks(t)
	name := fmt.Sprintf("fdpass-graceful-%d", os.Getpid())
	if out, err := exec.Command(ip, "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command(ip, "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	want, err := fd.Identify(int(h))
	h.Close()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{envPath + "=" + filepath.Join(t.TempDir(), "h.sock"), "NS_NAME=" + name}
	first := startRestartChild(t, "", "netns-gen", nil, env...)
	l1 := first.expect("ready")
	second := startRestartChild(t, "", "netns-gen", nil, env...)
	l2 := second.expect("ready")
	first.mustExit()
	if field(l1, "netns") != want.String() || field(l2, "netns") != want.String() {
		t.Errorf("listeners in namespaces %s and %s, want %s", field(l1, "netns"), field(l2, "netns"), want)
	}
	if field(l2, "inherited") != "true" || field(l1, "socket") != field(l2, "socket") {
		t.Errorf("second generation did not adopt the first's socket: %q, %q", l1, l2)
	}
	second.cmd.Process.Kill()
	second.wait()
}
