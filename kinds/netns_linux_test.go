//go:build linux

package kinds_test

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/kinds"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: CAP_SYS_ADMIN to create a network namespace, CAP_NET_ADMIN for SIOCGSKNS")
	}
}

func TestSocketNetNSRoot(t *testing.T) {
	needRoot(t)
	checkLeaks(t)
	cur, err := kinds.CurrentNetNS()
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	if id, err := fd.IdentifyConn(self); err != nil || id != cur {
		t.Errorf("CurrentNetNS = %v, /proc/self/ns/net is %v (%v)", cur, id, err)
	}
	socks := []struct {
		name string
		open func(t *testing.T) int
	}{
		{"tcp-listener", func(t *testing.T) int { ln, _, _ := tcpPair(t, "tcp", "127.0.0.1:0", false); return dupOf(t, ln) }},
		{"tcp-conn", func(t *testing.T) int { _, c, _ := tcpPair(t, "tcp", "127.0.0.1:0", false); return dupOf(t, c) }},
		{"unix-conn", func(t *testing.T) int { _, c, _ := unixPair(t, "unix"); return dupOf(t, c) }},
		{"udp", func(t *testing.T) int { return socket(t, unix.AF_INET, unix.SOCK_DGRAM, 0) }},
	}
	for _, tt := range socks {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			n := tt.open(t)
			id, err := kinds.SocketNetNS(n)
			if err != nil {
				t.Fatal(err)
			}
			if id != cur {
				t.Errorf("SocketNetNS = %v, want the current namespace %v", id, cur)
			}
			h, err := kinds.SocketNetNSHandle(n)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			if info, err := kinds.Detect(int(h)); err != nil || info.Kind != kinds.NetNS {
				t.Errorf("Detect(SocketNetNSHandle) = %+v, %v; want netns", info, err)
			}
			if hid, err := fd.Identify(int(h)); err != nil || hid != cur {
				t.Errorf("SocketNetNSHandle identity %v, %v; want %v", hid, err, cur)
			}
		})
	}
	t.Run("not-a-socket", func(t *testing.T) {
		checkLeaks(t)
		n := openFile(t, tempFile(t, "x"), unix.O_RDONLY)
		if id, err := kinds.SocketNetNS(n); err == nil {
			t.Errorf("SocketNetNS(file) = %v, want an error", id)
		}
		if h, err := kinds.SocketNetNSHandle(n); err == nil {
			h.Close()
			t.Error("SocketNetNSHandle(file) succeeded")
		}
	})
}

func TestSocketNetNSNewNamespace(t *testing.T) {
	needRoot(t)
	checkLeaks(t)
	before, err := kinds.CurrentNetNS()
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	ns, err := inNewNetNS(func() error {
		// The loopback device of a fresh namespace is down, so there is
		// no 127.0.0.1 to bind to; the wildcard address works.
		var err error
		ln, err = net.Listen("tcp4", "0.0.0.0:0")
		return err
	})
	if ln != nil {
		closeAtEnd(t, ln)
	}
	if err != nil {
		t.Fatalf("listening in a new network namespace: %v", err)
	}
	defer ns.Close()

	nsID, err := fd.Identify(int(ns))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := kinds.CurrentNetNS()
	if err != nil {
		t.Fatal(err)
	}
	if cur != before {
		t.Fatalf("current namespace changed from %v to %v: the thread was not restored", before, cur)
	}
	if nsID == cur {
		t.Fatalf("the new namespace %v is the current one", nsID)
	}

	n := dupOf(t, ln)
	if info, err := kinds.Detect(n); err != nil || info.Kind != kinds.TCPListener {
		t.Errorf("Detect = %+v, %v; want tcp-listener", info, err)
	}
	id, err := kinds.SocketNetNS(n)
	if err != nil {
		t.Fatal(err)
	}
	if id != nsID {
		t.Errorf("SocketNetNS = %v, want the new namespace %v", id, nsID)
	}
	if id == cur {
		t.Errorf("SocketNetNS = %v, the current namespace", id)
	}

	h, err := kinds.SocketNetNSHandle(n)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if !h.Equal(ns) {
		t.Errorf("SocketNetNSHandle %v is not the new namespace %v", h, ns)
	}

	// A namespace handle is itself a descriptor kind.
	m, info, err := kinds.FromValue(ns)
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != kinds.NetNS {
		t.Errorf("FromValue(new namespace) kind = %v, want netns", info.Kind)
	}
	nh, err := kinds.ToNsHandle(m)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	if !nh.Equal(ns) {
		t.Errorf("ToNsHandle gave %v, want %v", nh, ns)
	}

	// And a socket made here, after the round trip, is in the root one.
	r := socket(t, unix.AF_INET, unix.SOCK_STREAM, 0)
	if rid, err := kinds.SocketNetNS(r); err != nil || rid != cur {
		t.Errorf("SocketNetNS(root socket) = %v, %v; want %v", rid, err, cur)
	}
}

func TestListenInNetNS(t *testing.T) {
	needRoot(t)
	checkLeaks(t)
	cur, err := kinds.CurrentNetNS()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := inNewNetNS(func() error { return nil })
	if err != nil {
		t.Fatalf("new network namespace: %v", err)
	}
	defer ns.Close()
	nsID, err := fd.Identify(int(ns))
	if err != nil {
		t.Fatal(err)
	}

	// The loopback device of a fresh namespace is down: the wildcard
	// address is the one to bind to.
	ln, err := kinds.ListenInNetNS(ns, "tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := kinds.ListenPacketInNetNS(ns, "udp4", "0.0.0.0:0")
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	for _, s := range []struct {
		name string
		v    io.Closer
	}{{"ListenInNetNS", ln}, {"ListenPacketInNetNS", pc}} {
		id, err := kinds.SocketNetNS(dupOf(t, s.v))
		if err != nil {
			t.Fatal(err)
		}
		if id != nsID || id == cur {
			t.Errorf("%s: socket in namespace %v, want %v (the current one is %v)", s.name, id, nsID, cur)
		}
	}
	if now, err := kinds.CurrentNetNS(); err != nil || now != cur {
		t.Errorf("CurrentNetNS after the calls = %v, %v; want %v: a thread was not restored", now, err, cur)
	}

	// InNetNS returns fn's error, and fn runs in the namespace.
	errFn := errors.New("fn failed")
	var inside fd.ID
	err = kinds.InNetNS(ns, func() error {
		var err error
		if inside, err = kinds.CurrentNetNS(); err != nil {
			return err
		}
		return errFn
	})
	if !errors.Is(err, errFn) {
		t.Errorf("InNetNS error = %v, want fn's %v", err, errFn)
	}
	if inside != nsID {
		t.Errorf("fn ran in namespace %v, want %v", inside, nsID)
	}
	// A handle that is no namespace: an error, fn never runs, and the
	// thread stays where it was.
	ran := false
	if err := kinds.InNetNS(netns.None(), func() error { ran = true; return nil }); err == nil || ran {
		t.Errorf("InNetNS(netns.None()) = %v, fn ran: %t; want an error and no call", err, ran)
	}
	if now, err := kinds.CurrentNetNS(); err != nil || now != cur {
		t.Errorf("CurrentNetNS after a failed InNetNS = %v, %v; want %v", now, err, cur)
	}
}
