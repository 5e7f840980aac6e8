//go:build linux

package kinds_test

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/internal/childtest"
	"github.com/fdpass/fdpass/internal/fdtest"
	"github.com/fdpass/fdpass/kinds"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { childtest.Main(m) }

func checkLeaks(t testing.TB) {
	t.Helper()
	fdtest.CheckLeaks(t)
}

func mustCount(t testing.TB) int {
	t.Helper()
	n, err := fd.Count()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func isOpen(n int) bool {
	_, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0)
	return err == nil
}

func closeAtEnd(t testing.TB, c io.Closer) {
	t.Cleanup(func() { c.Close() })
}

// own registers the raw descriptor n to be closed when the test ends and
// returns it.
func own(t testing.TB, n int) int {
	t.Cleanup(func() { fd.Close(n) })
	return n
}

// dupOf returns a duplicate of the descriptor behind v, closed (with v) when
// the test ends.
func dupOf(t testing.TB, v io.Closer) int {
	t.Helper()
	closeAtEnd(t, v)
	n, err := fd.Dup(v)
	if err != nil {
		t.Fatal(err)
	}
	return own(t, n)
}

func socket(t testing.TB, family, typ, proto int) int {
	t.Helper()
	n, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		t.Skipf("socket(%d, %d, %d): %v", family, typ, proto, err)
	}
	return own(t, n)
}

func openFile(t testing.TB, path string, flags int) int {
	t.Helper()
	n, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return own(t, n)
}

const ioTimeout = 5 * time.Second

func hasIPv6Loopback() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func needIPv6(t testing.TB) {
	t.Helper()
	if !hasIPv6Loopback() {
		t.Skip("::1 is not available")
	}
}

// tcpPair returns a listener and both ends of one connection through it.
func tcpPair(t testing.TB, network, addr string, mptcp bool) (net.Listener, net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, ln)
	d := net.Dialer{Timeout: ioTimeout}
	d.SetMultipathTCP(mptcp)
	c, err := d.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, c)
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(ioTimeout))
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, s)
	return ln, c, s
}

// unixPair returns a listener on a fresh path and both ends of one
// connection through it.
func unixPair(t testing.TB, network string) (net.Listener, net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen(network, shortPath(t, "s"))
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, ln)
	c, err := net.DialTimeout(network, ln.Addr().String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, c)
	ln.(*net.UnixListener).SetDeadline(time.Now().Add(ioTimeout))
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, s)
	return ln, c, s
}

// shortPath returns a path in a fresh directory short enough for a unix
// socket address (t.TempDir can be too long with long subtest names).
func shortPath(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kinds")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, name)
}

func tempFile(t testing.TB, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// listeningSocket returns a raw socket of the given family and protocol,
// bound to loopback and listening.
func listeningSocket(t testing.TB, family, proto int) int {
	t.Helper()
	s := socket(t, family, unix.SOCK_STREAM, proto)
	var sa unix.Sockaddr = &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if family == unix.AF_INET6 {
		sa = &unix.SockaddrInet6{Addr: [16]byte{15: 1}}
	}
	if err := unix.Bind(s, sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(s, 1); err != nil {
		t.Fatal(err)
	}
	return s
}

// inNewNetNS runs f on an OS thread moved into a new network namespace and
// moves the thread back afterwards. It returns a handle on the new namespace
// (the caller's to close) and f's error. A thread that cannot be moved back
// is never unlocked, so the runtime ends it with its goroutine.
func inNewNetNS(f func() error) (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{netns.None(), err}
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		var ferr error
		if err == nil {
			ferr = f()
		}
		if serr := netns.Set(orig); serr != nil {
			// Stay locked: this thread is in the wrong namespace.
			if err == nil {
				ns.Close()
			}
			ch <- result{netns.None(), errors.Join(serr, ferr)}
			return
		}
		runtime.UnlockOSThread()
		if err != nil {
			ch <- result{netns.None(), err}
			return
		}
		ch <- result{ns, ferr}
	}()
	r := <-ch
	return r.ns, r.err
}

// pingSocket returns an ICMP echo ("ping") socket. Creating one needs the
// group in net.ipv4.ping_group_range; if ours is not, and we are root, the
// socket is made in a fresh namespace whose range we may set.
func pingSocket(t testing.TB, family, proto int) int {
	t.Helper()
	if n, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto); err == nil {
		return own(t, n)
	}
	if os.Geteuid() != 0 {
		t.Skip("ping sockets are not allowed for our group and we are not root")
	}
	s := -1
	ns, err := inNewNetNS(func() error {
		// Network sysctls belong to the opening thread's namespace.
		if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 0"), 0); err != nil {
			return err
		}
		var err error
		s, err = unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
		return err
	})
	if ns.IsOpen() {
		ns.Close()
	}
	if err != nil {
		if s >= 0 {
			fd.Close(s)
		}
		t.Skipf("ping socket: %v", err)
	}
	return own(t, s)
}

func blockDevice(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/dev")
	if err != nil {
		t.Skip(err)
	}
	for _, e := range ents {
		if e.Type()&os.ModeDevice != 0 && e.Type()&os.ModeCharDevice == 0 {
			n, err := unix.Open("/dev/"+e.Name(), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
			if err == nil {
				return own(t, n)
			}
		}
	}
	t.Skip("no block device that we can open")
	return -1
}

func memfd(t testing.TB, content string) int {
	t.Helper()
	n, err := unix.MemfdCreate("kinds-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Skipf("memfd_create: %v", err)
	}
	own(t, n)
	if content != "" {
		if _, err := unix.Write(n, []byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// ipprotoSMC is IPPROTO_SMC from linux/in.h (Linux 6.11), which x/sys does
// not name.
const ipprotoSMC = 256

// anyMode marks an Info.Mode the test does not check: anonymous inodes
// report no file type on some kernels and S_IFREG on others.
const anyMode = ^uint32(0)

var (
	tcpProtos = []int{unix.IPPROTO_TCP, unix.IPPROTO_MPTCP}
	udpProtos = []int{unix.IPPROTO_UDP}
)

type descCase struct {
	name string
	// open returns a descriptor that the test closes when it ends.
	open    func(t *testing.T) int
	kind    kinds.Kind
	network string
	family  int
	typ     int
	protos  []int // acceptable Protocol values; nil means 0
	mode    uint32
}

func descCases() []descCase {
	const (
		inet   = unix.AF_INET
		inet6  = unix.AF_INET6
		afUnix = unix.AF_UNIX
		stream = unix.SOCK_STREAM
		dgram  = unix.SOCK_DGRAM
		seqp   = unix.SOCK_SEQPACKET
		raw    = unix.SOCK_RAW
		sock   = unix.S_IFSOCK
		reg    = unix.S_IFREG
	)
	tcp := func(network, addr string, side int, mptcp bool) func(t *testing.T) int {
		return func(t *testing.T) int {
			if network == "tcp6" {
				needIPv6(t)
			}
			ln, c, s := tcpPair(t, network, addr, mptcp)
			return dupOf(t, []io.Closer{ln, c, s}[side])
		}
	}
	udp := func(network, addr string, connected bool) func(t *testing.T) int {
		return func(t *testing.T) int {
			if network == "udp6" {
				needIPv6(t)
			}
			pc, err := net.ListenPacket(network, addr)
			if err != nil {
				t.Fatal(err)
			}
			if !connected {
				return dupOf(t, pc)
			}
			closeAtEnd(t, pc)
			c, err := net.Dial(network, pc.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			return dupOf(t, c)
		}
	}
	unixSide := func(network string, side int) func(t *testing.T) int {
		return func(t *testing.T) int {
			ln, c, s := unixPair(t, network)
			return dupOf(t, []io.Closer{ln, c, s}[side])
		}
	}
	socketpair := func(typ int) func(t *testing.T) int {
		return func(t *testing.T) int {
			p, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			own(t, p[1])
			return own(t, p[0])
		}
	}
	path := func(p string, flags int) func(t *testing.T) int {
		return func(t *testing.T) int { return openFile(t, p, flags) }
	}
	const (
		listener = 0
		dialed   = 1
		accepted = 2
	)
	return []descCase{
		{"tcp4-listener", tcp("tcp4", "127.0.0.1:0", listener, false), kinds.TCPListener, "tcp4", inet, stream, tcpProtos, sock},
		{"tcp4-conn-dialed", tcp("tcp4", "127.0.0.1:0", dialed, false), kinds.TCPConn, "tcp4", inet, stream, tcpProtos, sock},
		{"tcp4-conn-accepted", tcp("tcp4", "127.0.0.1:0", accepted, false), kinds.TCPConn, "tcp4", inet, stream, tcpProtos, sock},
		{"tcp4-conn-peer-closed", func(t *testing.T) int {
			_, c, s := tcpPair(t, "tcp4", "127.0.0.1:0", false)
			c.Close() // s goes to CLOSE_WAIT
			return dupOf(t, s)
		}, kinds.TCPConn, "tcp4", inet, stream, tcpProtos, sock},
		{"mptcp4-conn-dialed", tcp("tcp4", "127.0.0.1:0", dialed, true), kinds.TCPConn, "tcp4", inet, stream, tcpProtos, sock},
		{"mptcp4-conn-accepted", tcp("tcp4", "127.0.0.1:0", accepted, true), kinds.TCPConn, "tcp4", inet, stream, tcpProtos, sock},
		{"tcp6-listener", tcp("tcp6", "[::1]:0", listener, false), kinds.TCPListener, "tcp6", inet6, stream, tcpProtos, sock},
		{"tcp6-conn-dialed", tcp("tcp6", "[::1]:0", dialed, false), kinds.TCPConn, "tcp6", inet6, stream, tcpProtos, sock},
		{"tcp6-conn-accepted", tcp("tcp6", "[::1]:0", accepted, false), kinds.TCPConn, "tcp6", inet6, stream, tcpProtos, sock},
		{"tcp-socket-unconnected", func(t *testing.T) int {
			return socket(t, inet, stream, unix.IPPROTO_TCP)
		}, kinds.TCPConn, "tcp4", inet, stream, []int{unix.IPPROTO_TCP}, sock},
		{"tcp-socket-listening", func(t *testing.T) int {
			return listeningSocket(t, inet, unix.IPPROTO_TCP)
		}, kinds.TCPListener, "tcp4", inet, stream, []int{unix.IPPROTO_TCP}, sock},
		{"tcp6-socket-unconnected", func(t *testing.T) int {
			return socket(t, inet6, stream, unix.IPPROTO_TCP)
		}, kinds.TCPConn, "tcp6", inet6, stream, []int{unix.IPPROTO_TCP}, sock},
		{"mptcp-socket-unconnected", func(t *testing.T) int {
			return socket(t, inet, stream, unix.IPPROTO_MPTCP)
		}, kinds.TCPConn, "tcp4", inet, stream, []int{unix.IPPROTO_MPTCP}, sock},
		{"mptcp-socket-listening", func(t *testing.T) int {
			return listeningSocket(t, inet, unix.IPPROTO_MPTCP)
		}, kinds.TCPListener, "tcp4", inet, stream, []int{unix.IPPROTO_MPTCP}, sock},
		{"udp4", udp("udp4", "127.0.0.1:0", false), kinds.UDP, "udp4", inet, dgram, udpProtos, sock},
		{"udp4-connected", udp("udp4", "127.0.0.1:0", true), kinds.UDP, "udp4", inet, dgram, udpProtos, sock},
		{"udp6", udp("udp6", "[::1]:0", false), kinds.UDP, "udp6", inet6, dgram, udpProtos, sock},
		{"udp6-connected", udp("udp6", "[::1]:0", true), kinds.UDP, "udp6", inet6, dgram, udpProtos, sock},
		{"udp-socket", func(t *testing.T) int {
			return socket(t, inet, dgram, 0)
		}, kinds.UDP, "udp4", inet, dgram, udpProtos, sock},
		{"udplite-socket", func(t *testing.T) int {
			return socket(t, inet, dgram, unix.IPPROTO_UDPLITE)
		}, kinds.UDP, "udp4", inet, dgram, []int{unix.IPPROTO_UDPLITE}, sock},
		{"unix-listener", unixSide("unix", listener), kinds.UnixListener, "unix", afUnix, stream, nil, sock},
		{"unix-conn-dialed", unixSide("unix", dialed), kinds.UnixConn, "unix", afUnix, stream, nil, sock},
		{"unix-conn-accepted", unixSide("unix", accepted), kinds.UnixConn, "unix", afUnix, stream, nil, sock},
		{"unix-socketpair", socketpair(stream), kinds.UnixConn, "unix", afUnix, stream, nil, sock},
		{"unixpacket-listener", unixSide("unixpacket", listener), kinds.UnixListener, "unixpacket", afUnix, seqp, nil, sock},
		{"unixpacket-conn-dialed", unixSide("unixpacket", dialed), kinds.UnixConn, "unixpacket", afUnix, seqp, nil, sock},
		{"unixpacket-conn-accepted", unixSide("unixpacket", accepted), kinds.UnixConn, "unixpacket", afUnix, seqp, nil, sock},
		{"unixpacket-socketpair", socketpair(seqp), kinds.UnixConn, "unixpacket", afUnix, seqp, nil, sock},
		{"unixgram", func(t *testing.T) int {
			c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: shortPath(t, "g"), Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			return dupOf(t, c)
		}, kinds.UnixDatagram, "unixgram", afUnix, dgram, nil, sock},
		{"unixgram-socketpair", socketpair(dgram), kinds.UnixDatagram, "unixgram", afUnix, dgram, nil, sock},
		{"file-empty", func(t *testing.T) int {
			return openFile(t, tempFile(t, ""), unix.O_RDONLY)
		}, kinds.File, "", 0, 0, nil, reg},
		{"file-nonempty", func(t *testing.T) int {
			return openFile(t, tempFile(t, "hello"), unix.O_RDONLY)
		}, kinds.File, "", 0, 0, nil, reg},
		{"proc-file", path("/proc/self/status", unix.O_RDONLY), kinds.File, "", 0, 0, nil, reg},
		{"directory", func(t *testing.T) int {
			return openFile(t, t.TempDir(), unix.O_RDONLY|unix.O_DIRECTORY)
		}, kinds.File, "", 0, 0, nil, unix.S_IFDIR},
		{"fifo", func(t *testing.T) int {
			p := filepath.Join(t.TempDir(), "fifo")
			if err := unix.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
			return openFile(t, p, unix.O_RDWR|unix.O_NONBLOCK)
		}, kinds.File, "", 0, 0, nil, unix.S_IFIFO},
		{"pipe", func(t *testing.T) int {
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			own(t, p[1])
			return own(t, p[0])
		}, kinds.File, "", 0, 0, nil, unix.S_IFIFO},
		{"dev-null", path("/dev/null", unix.O_RDWR), kinds.File, "", 0, 0, nil, unix.S_IFCHR},
		{"block-device", func(t *testing.T) int { return blockDevice(t) }, kinds.Other, "", 0, 0, nil, unix.S_IFBLK},
		{"netns", path("/proc/self/ns/net", unix.O_RDONLY), kinds.NetNS, "", 0, 0, nil, reg},
		{"thread-netns", path("/proc/thread-self/ns/net", unix.O_RDONLY), kinds.NetNS, "", 0, 0, nil, reg},
		{"mntns", path("/proc/self/ns/mnt", unix.O_RDONLY), kinds.Other, "", 0, 0, nil, reg},
		{"userns", path("/proc/self/ns/user", unix.O_RDONLY), kinds.Other, "", 0, 0, nil, reg},
		{"eventfd", func(t *testing.T) int {
			n, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			return own(t, n)
		}, kinds.Other, "", 0, 0, nil, anyMode},
		{"epoll", func(t *testing.T) int {
			n, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			return own(t, n)
		}, kinds.Other, "", 0, 0, nil, anyMode},
		{"timerfd", func(t *testing.T) int {
			n, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			return own(t, n)
		}, kinds.Other, "", 0, 0, nil, anyMode},
		{"pidfd", func(t *testing.T) int {
			n, err := unix.PidfdOpen(os.Getpid(), 0)
			if err != nil {
				t.Skipf("pidfd_open: %v", err)
			}
			return own(t, n)
		}, kinds.Other, "", 0, 0, nil, anyMode},
		{"memfd-empty", func(t *testing.T) int { return memfd(t, "") }, kinds.File, "", 0, 0, nil, reg},
		{"memfd-nonempty", func(t *testing.T) int { return memfd(t, "hello") }, kinds.File, "", 0, 0, nil, reg},
		{"netlink", func(t *testing.T) int {
			return socket(t, unix.AF_NETLINK, raw, unix.NETLINK_ROUTE)
		}, kinds.Other, "", unix.AF_NETLINK, raw, nil, sock},
		{"packet", func(t *testing.T) int {
			return socket(t, unix.AF_PACKET, dgram, 0)
		}, kinds.Other, "", unix.AF_PACKET, dgram, nil, sock},
		{"raw-icmp", func(t *testing.T) int {
			return socket(t, inet, raw, unix.IPPROTO_ICMP)
		}, kinds.Other, "", inet, raw, []int{unix.IPPROTO_ICMP}, sock},
		{"raw-tcp", func(t *testing.T) int {
			return socket(t, inet, raw, unix.IPPROTO_TCP)
		}, kinds.Other, "", inet, raw, []int{unix.IPPROTO_TCP}, sock},
		{"raw-udp", func(t *testing.T) int {
			return socket(t, inet, raw, unix.IPPROTO_UDP)
		}, kinds.Other, "", inet, raw, []int{unix.IPPROTO_UDP}, sock},
		{"raw6-tcp", func(t *testing.T) int {
			return socket(t, inet6, raw, unix.IPPROTO_TCP)
		}, kinds.Other, "", inet6, raw, []int{unix.IPPROTO_TCP}, sock},
		{"ping4", func(t *testing.T) int {
			return pingSocket(t, inet, unix.IPPROTO_ICMP)
		}, kinds.Other, "", inet, dgram, []int{unix.IPPROTO_ICMP}, sock},
		{"ping6", func(t *testing.T) int {
			return pingSocket(t, inet6, unix.IPPROTO_ICMPV6)
		}, kinds.Other, "", inet6, dgram, []int{unix.IPPROTO_ICMPV6}, sock},
		{"sctp", func(t *testing.T) int {
			return socket(t, inet, stream, unix.IPPROTO_SCTP)
		}, kinds.Other, "", inet, stream, []int{unix.IPPROTO_SCTP}, sock},
		// SMC sockets answer SOL_TCP options from their internal TCP
		// socket, so they test the TCP fast path of Verify.
		{"smc-inet", func(t *testing.T) int {
			return socket(t, inet, stream, ipprotoSMC)
		}, kinds.Other, "", inet, stream, []int{ipprotoSMC}, sock},
		{"af-smc", func(t *testing.T) int {
			return socket(t, unix.AF_SMC, stream, 0)
		}, kinds.Other, "", unix.AF_SMC, stream, nil, sock},
		{"vsock", func(t *testing.T) int {
			return socket(t, unix.AF_VSOCK, stream, 0)
		}, kinds.Other, "", unix.AF_VSOCK, stream, nil, sock},
		{"xdp", func(t *testing.T) int {
			return socket(t, unix.AF_XDP, raw, 0)
		}, kinds.Other, "", unix.AF_XDP, raw, nil, sock},
		// O_PATH descriptors can be passed like any other. fstat works on
		// them; ioctl and getsockopt do not.
		{"opath-file", func(t *testing.T) int {
			return openFile(t, tempFile(t, "x"), unix.O_PATH)
		}, kinds.File, "", 0, 0, nil, reg},
		{"opath-directory", func(t *testing.T) int {
			return openFile(t, t.TempDir(), unix.O_PATH)
		}, kinds.File, "", 0, 0, nil, unix.S_IFDIR},
		{"opath-netns", path("/proc/self/ns/net", unix.O_PATH), kinds.Other, "", 0, 0, nil, reg},
		{"opath-unix-socket", func(t *testing.T) int {
			ln, err := net.Listen("unix", shortPath(t, "s"))
			if err != nil {
				t.Fatal(err)
			}
			closeAtEnd(t, ln)
			return openFile(t, ln.Addr().String(), unix.O_PATH)
		}, kinds.Other, "", 0, 0, nil, sock},
	}
}

func TestDetect(t *testing.T) {
	for _, tt := range descCases() {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			n := tt.open(t)
			info, err := kinds.Detect(n)
			if err != nil {
				t.Fatalf("Detect: %v", err)
			}
			t.Logf("%+v", info)
			if info.Kind != tt.kind {
				t.Errorf("Kind = %v, want %v (info %+v)", info.Kind, tt.kind, info)
			}
			if got := info.Network(); got != tt.network {
				t.Errorf("Network() = %q, want %q", got, tt.network)
			}
			if info.Family != tt.family || info.Type != tt.typ {
				t.Errorf("Family, Type = %d, %d; want %d, %d", info.Family, info.Type, tt.family, tt.typ)
			}
			protos := tt.protos
			if protos == nil {
				protos = []int{0}
			}
			if !slices.Contains(protos, info.Protocol) {
				t.Errorf("Protocol = %d, want one of %v", info.Protocol, protos)
			}
			if tt.mode != anyMode && info.Mode != tt.mode {
				t.Errorf("Mode = %#o, want %#o", info.Mode, tt.mode)
			}
			if !isOpen(n) {
				t.Fatal("Detect closed the descriptor")
			}
		})
	}
}

// allKinds is every Kind Verify can be asked about, invalid ones included.
var allKinds = []kinds.Kind{
	kinds.Invalid, kinds.TCPListener, kinds.TCPConn, kinds.UDP, kinds.UnixListener,
	kinds.UnixConn, kinds.UnixDatagram, kinds.File, kinds.NetNS, kinds.Other, 10, 255,
}

// TestVerify checks Verify for every descriptor in the Detect table against
// every declared kind. Verify has fast paths for TCP and UDP, and they must
// agree with Detect.
func TestVerify(t *testing.T) {
	for _, tt := range descCases() {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			n := tt.open(t)
			for _, want := range allKinds {
				err := kinds.Verify(n, want)
				if want == tt.kind {
					if err != nil {
						t.Errorf("Verify(%s, %v) = %v, want nil", tt.name, want, err)
					}
					continue
				}
				if !errors.Is(err, kinds.ErrMismatch) {
					t.Errorf("Verify(%s, %v) = %v, want an error matching ErrMismatch", tt.name, want, err)
					continue
				}
				var me *kinds.MismatchError
				if !errors.As(err, &me) {
					t.Errorf("Verify(%s, %v) = %v (%T), want a *MismatchError", tt.name, want, err, err)
					continue
				}
				if me.Want != want {
					t.Errorf("Verify(%s, %v): MismatchError.Want = %v", tt.name, want, me.Want)
				}
				if want.Valid() && me.Got != tt.kind {
					t.Errorf("Verify(%s, %v): MismatchError.Got = %v, want %v", tt.name, want, me.Got, tt.kind)
				}
			}
			if !isOpen(n) {
				t.Fatal("Verify closed the descriptor")
			}
		})
	}
}

func TestDetectVerifyBadDescriptor(t *testing.T) {
	checkLeaks(t)
	const bad = 1 << 20
	if info, err := kinds.Detect(bad); !errors.Is(err, syscall.EBADF) {
		t.Errorf("Detect(bad) = %+v, %v; want EBADF", info, err)
	}
	for _, k := range allKinds {
		if !k.Valid() {
			continue
		}
		err := kinds.Verify(bad, k)
		if err == nil || errors.Is(err, kinds.ErrMismatch) {
			t.Errorf("Verify(bad, %v) = %v; want a system-call error, not a mismatch", k, err)
		}
	}
}

// Conversions.

func TestFromValue(t *testing.T) {
	tests := []struct {
		name string
		open func(t *testing.T) any
		kind kinds.Kind
	}{
		{"tcp-listener", func(t *testing.T) any { ln, _, _ := tcpPair(t, "tcp", "127.0.0.1:0", false); return ln }, kinds.TCPListener},
		{"tcp-conn", func(t *testing.T) any { _, c, _ := tcpPair(t, "tcp", "127.0.0.1:0", false); return c }, kinds.TCPConn},
		{"udp", func(t *testing.T) any {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			closeAtEnd(t, pc)
			return pc
		}, kinds.UDP},
		{"unix-listener", func(t *testing.T) any { ln, _, _ := unixPair(t, "unix"); return ln }, kinds.UnixListener},
		{"unix-conn", func(t *testing.T) any { _, c, _ := unixPair(t, "unix"); return c }, kinds.UnixConn},
		{"file", func(t *testing.T) any {
			f, err := os.Open(tempFile(t, "x"))
			if err != nil {
				t.Fatal(err)
			}
			closeAtEnd(t, f)
			return f
		}, kinds.File},
		{"netns-handle", func(t *testing.T) any {
			h, err := netns.Get()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { h.Close() })
			return h
		}, kinds.NetNS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			v := tt.open(t)
			before := mustCount(t)
			n, info, err := kinds.FromValue(v)
			if err != nil {
				t.Fatal(err)
			}
			if info.Kind != tt.kind {
				t.Errorf("Kind = %v, want %v", info.Kind, tt.kind)
			}
			if got := mustCount(t); got != before+1 {
				t.Errorf("FromValue opened %d descriptors, want 1", got-before)
			}
			fl, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0)
			if err != nil || fl&unix.FD_CLOEXEC == 0 {
				t.Errorf("duplicate flags %#x, %v; want FD_CLOEXEC", fl, err)
			}
			var orig int
			if h, ok := v.(netns.NsHandle); ok {
				orig = int(h)
			} else {
				rc, err := v.(syscall.Conn).SyscallConn()
				if err != nil {
					t.Fatal(err)
				}
				rc.Control(func(f uintptr) { orig = int(f) })
			}
			if n == orig {
				t.Errorf("FromValue returned the original descriptor %d", n)
			}
			if same, err := fd.Same(n, orig); err != nil || !same {
				t.Errorf("Same(duplicate, original) = %v, %v; want true", same, err)
			}
			if err := fd.Close(n); err != nil {
				t.Fatal(err)
			}
			if !isOpen(orig) {
				t.Error("closing the duplicate closed the original")
			}
		})
	}
}

func TestFromValueErrors(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	t.Run("not-syscall-conn", func(t *testing.T) {
		checkLeaks(t)
		n, _, err := kinds.FromValue(a)
		if !errors.Is(err, fd.ErrNotSyscallConn) || n != -1 {
			t.Errorf("FromValue(net.Pipe conn) = %d, %v; want -1, ErrNotSyscallConn", n, err)
		}
	})
	t.Run("closed-listener", func(t *testing.T) {
		checkLeaks(t)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		if n, _, err := kinds.FromValue(ln); err == nil {
			fd.Close(n)
			t.Error("FromValue of a closed listener succeeded")
		}
	})
	t.Run("closed-netns-handle", func(t *testing.T) {
		checkLeaks(t)
		if n, _, err := kinds.FromValue(netns.None()); err == nil {
			fd.Close(n)
			t.Error("FromValue(netns.None()) succeeded")
		}
	})
}

func TestToListener(t *testing.T) {
	for _, network := range []string{"tcp", "unix", "unixpacket"} {
		t.Run(network, func(t *testing.T) {
			checkLeaks(t)
			var orig net.Listener
			var err error
			if network == "tcp" {
				orig, err = net.Listen("tcp", "127.0.0.1:0")
			} else {
				orig, err = net.Listen(network, shortPath(t, "s"))
			}
			if err != nil {
				t.Fatal(err)
			}
			if ul, ok := orig.(*net.UnixListener); ok {
				// The copy must outlive the original's Close.
				ul.SetUnlinkOnClose(false)
			}
			defer orig.Close()
			n, info, err := kinds.FromValue(orig)
			if err != nil {
				t.Fatal(err)
			}
			wantKind := kinds.TCPListener
			if network != "tcp" {
				wantKind = kinds.UnixListener
			}
			if info.Kind != wantKind {
				t.Errorf("Kind = %v, want %v", info.Kind, wantKind)
			}
			ln, err := kinds.ToListener(n)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			// The converted listener stands on its own.
			orig.Close()
			addr := ln.Addr()
			if addr.Network() != network {
				t.Errorf("Addr().Network() = %q, want %q", addr.Network(), network)
			}
			c, err := net.DialTimeout(network, addr.String(), ioTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			type deadliner interface{ SetDeadline(time.Time) error }
			ln.(deadliner).SetDeadline(time.Now().Add(ioTimeout))
			s, err := ln.Accept()
			if err != nil {
				t.Fatalf("Accept: %v", err)
			}
			defer s.Close()
			exchange(t, c, s)
		})
	}
}

// exchange checks that a and b, two ends of a stream, carry bytes both ways.
func exchange(t *testing.T, a, b net.Conn) {
	t.Helper()
	a.SetDeadline(time.Now().Add(ioTimeout))
	b.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := a.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(b, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v; want ping", buf, err)
	}
	if _, err := b.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(a, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("read %q, %v; want pong", buf, err)
	}
}

func TestToConn(t *testing.T) {
	for _, network := range []string{"tcp", "unix", "unixpacket"} {
		t.Run(network, func(t *testing.T) {
			checkLeaks(t)
			var c, s net.Conn
			if network == "tcp" {
				_, c, s = tcpPair(t, "tcp", "127.0.0.1:0", false)
			} else {
				_, c, s = unixPair(t, network)
			}
			n, info, err := kinds.FromValue(s)
			if err != nil {
				t.Fatal(err)
			}
			if info.Kind != kinds.TCPConn && info.Kind != kinds.UnixConn {
				t.Errorf("Kind = %v, want a connection", info.Kind)
			}
			conv, err := kinds.ToConn(n)
			if err != nil {
				t.Fatal(err)
			}
			defer conv.Close()
			s.Close()
			if conv.RemoteAddr().String() != c.LocalAddr().String() {
				t.Errorf("RemoteAddr = %v, want %v", conv.RemoteAddr(), c.LocalAddr())
			}
			exchange(t, c, conv)
		})
	}
}

func TestToPacketConn(t *testing.T) {
	tests := []struct {
		name string
		open func(t *testing.T) (net.PacketConn, net.Conn)
	}{
		{"udp", func(t *testing.T) (net.PacketConn, net.Conn) {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			closeAtEnd(t, pc)
			peer, err := net.Dial("udp", pc.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			closeAtEnd(t, peer)
			return pc, peer
		}},
		{"unixgram", func(t *testing.T) (net.PacketConn, net.Conn) {
			pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: shortPath(t, "srv"), Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			closeAtEnd(t, pc)
			laddr := &net.UnixAddr{Name: shortPath(t, "cli"), Net: "unixgram"}
			peer, err := net.DialUnix("unixgram", laddr, pc.LocalAddr().(*net.UnixAddr))
			if err != nil {
				t.Fatal(err)
			}
			closeAtEnd(t, peer)
			return pc, peer
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			pc, peer := tt.open(t)
			n, _, err := kinds.FromValue(pc)
			if err != nil {
				t.Fatal(err)
			}
			conv, err := kinds.ToPacketConn(n)
			if err != nil {
				t.Fatal(err)
			}
			defer conv.Close()
			pc.Close()
			conv.SetDeadline(time.Now().Add(ioTimeout))
			peer.SetDeadline(time.Now().Add(ioTimeout))
			if _, err := peer.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 16)
			m, from, err := conv.ReadFrom(buf)
			if err != nil || string(buf[:m]) != "ping" {
				t.Fatalf("ReadFrom = %q, %v; want ping", buf[:m], err)
			}
			if _, err := conv.WriteTo([]byte("pong"), from); err != nil {
				t.Fatal(err)
			}
			m, err = peer.Read(buf)
			if err != nil || string(buf[:m]) != "pong" {
				t.Fatalf("peer read %q, %v; want pong", buf[:m], err)
			}
		})
	}
}

func TestToFile(t *testing.T) {
	checkLeaks(t)
	f, err := os.Open(tempFile(t, "hello, world"))
	if err != nil {
		t.Fatal(err)
	}
	n, info, err := kinds.FromValue(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != kinds.File {
		t.Errorf("Kind = %v, want file", info.Kind)
	}
	g := kinds.ToFile(n, "copy")
	defer g.Close()
	if g.Name() != "copy" {
		t.Errorf("Name() = %q, want copy", g.Name())
	}
	b, err := io.ReadAll(g)
	if err != nil || string(b) != "hello, world" {
		t.Errorf("ReadAll = %q, %v; want hello, world", b, err)
	}
}

func TestToNsHandle(t *testing.T) {
	t.Run("netns", func(t *testing.T) {
		checkLeaks(t)
		n := openFile(t, "/proc/self/ns/net", unix.O_RDONLY)
		m, err := fd.DupFD(n)
		if err != nil {
			t.Fatal(err)
		}
		h, err := kinds.ToNsHandle(m)
		if err != nil {
			fd.Close(m)
			t.Fatal(err)
		}
		defer h.Close()
		if int(h) != m {
			t.Errorf("handle %d, want descriptor %d", h, m)
		}
		cur, err := kinds.CurrentNetNS()
		if err != nil {
			t.Fatal(err)
		}
		if id, err := fd.Identify(int(h)); err != nil || id != cur {
			t.Errorf("handle identity %v, %v; want %v", id, err, cur)
		}
	})
	notNS := []struct {
		name string
		open func(t *testing.T) int
	}{
		{"file", func(t *testing.T) int { return openFile(t, tempFile(t, "x"), unix.O_RDONLY) }},
		{"mntns", func(t *testing.T) int { return openFile(t, "/proc/self/ns/mnt", unix.O_RDONLY) }},
		{"tcp-listener", func(t *testing.T) int {
			ln, _, _ := tcpPair(t, "tcp", "127.0.0.1:0", false)
			return dupOf(t, ln)
		}},
	}
	for _, tt := range notNS {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			src := tt.open(t)
			before := mustCount(t)
			n, err := fd.DupFD(src)
			if err != nil {
				t.Fatal(err)
			}
			h, err := kinds.ToNsHandle(n)
			if err == nil {
				h.Close()
				t.Fatal("ToNsHandle succeeded")
			}
			if !errors.Is(err, kinds.ErrConvert) {
				t.Errorf("error %v does not match ErrConvert", err)
			}
			if !errors.Is(err, kinds.ErrMismatch) {
				t.Errorf("error %v does not match ErrMismatch", err)
			}
			if h.IsOpen() {
				t.Errorf("handle %d returned with an error", h)
			}
			if isOpen(n) {
				fd.Close(n)
				t.Errorf("ToNsHandle left descriptor %d open on error", n)
			}
			if got := mustCount(t); got != before {
				t.Errorf("descriptors: %d before, %d after", before, got)
			}
		})
	}
}

// TestConvertErrors checks that a conversion that cannot work returns
// ErrConvert and closes the descriptor it was given.
func TestConvertErrors(t *testing.T) {
	udp := func(t *testing.T) int {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return dupOf(t, pc)
	}
	tcpListener := func(t *testing.T) int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return dupOf(t, ln)
	}
	file := func(t *testing.T) int { return openFile(t, tempFile(t, "x"), unix.O_RDONLY) }
	netlink := func(t *testing.T) int { return socket(t, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE) }
	toListener := func(n int) (io.Closer, error) { return kinds.ToListener(n) }
	toConn := func(n int) (io.Closer, error) { return kinds.ToConn(n) }
	toPacketConn := func(n int) (io.Closer, error) { return kinds.ToPacketConn(n) }
	tests := []struct {
		name    string
		open    func(t *testing.T) int
		convert func(int) (io.Closer, error)
	}{
		{"ToListener-udp", udp, toListener},
		{"ToListener-file", file, toListener},
		{"ToListener-netlink", netlink, toListener},
		{"ToConn-file", file, toConn},
		{"ToPacketConn-tcp-listener", tcpListener, toPacketConn},
		{"ToPacketConn-file", file, toPacketConn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			src := tt.open(t)
			before := mustCount(t)
			n, err := fd.DupFD(src)
			if err != nil {
				t.Fatal(err)
			}
			v, err := tt.convert(n)
			if err == nil {
				v.Close()
				t.Fatalf("conversion succeeded: %T", v)
			}
			if !errors.Is(err, kinds.ErrConvert) {
				t.Errorf("error %v does not match ErrConvert", err)
			}
			if isOpen(n) {
				fd.Close(n)
				t.Errorf("descriptor %d left open on error", n)
			}
			if got := mustCount(t); got != before {
				t.Errorf("descriptors: %d before, %d after", before, got)
			}
		})
	}
}

func TestToValue(t *testing.T) {
	tests := []struct {
		name  string
		open  func(t *testing.T) int
		check func(v any) bool
	}{
		{"tcp-listener", func(t *testing.T) int { ln, _, _ := tcpPair(t, "tcp", "127.0.0.1:0", false); return dupOf(t, ln) },
			func(v any) bool { _, ok := v.(*net.TCPListener); return ok }},
		{"tcp-conn", func(t *testing.T) int { _, c, _ := tcpPair(t, "tcp", "127.0.0.1:0", false); return dupOf(t, c) },
			func(v any) bool { _, ok := v.(*net.TCPConn); return ok }},
		{"udp", func(t *testing.T) int {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			return dupOf(t, pc)
		}, func(v any) bool { _, ok := v.(*net.UDPConn); return ok }},
		{"unix-listener", func(t *testing.T) int { ln, _, _ := unixPair(t, "unix"); return dupOf(t, ln) },
			func(v any) bool { _, ok := v.(*net.UnixListener); return ok }},
		{"unix-conn", func(t *testing.T) int { _, c, _ := unixPair(t, "unix"); return dupOf(t, c) },
			func(v any) bool { _, ok := v.(*net.UnixConn); return ok }},
		{"unixgram", func(t *testing.T) int {
			p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			own(t, p[1])
			return own(t, p[0])
		}, func(v any) bool { _, ok := v.(*net.UnixConn); return ok }},
		{"file", func(t *testing.T) int { return openFile(t, tempFile(t, "x"), unix.O_RDONLY) },
			func(v any) bool { f, ok := v.(*os.File); return ok && f.Name() == "name" }},
		{"netns", func(t *testing.T) int { return openFile(t, "/proc/self/ns/net", unix.O_RDONLY) },
			func(v any) bool { _, ok := v.(netns.NsHandle); return ok }},
		{"eventfd", func(t *testing.T) int {
			n, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			return own(t, n)
		}, func(v any) bool { f, ok := v.(*os.File); return ok && f.Name() == "name" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			src := tt.open(t)
			info, err := kinds.Detect(src)
			if err != nil {
				t.Fatal(err)
			}
			n, err := fd.DupFD(src)
			if err != nil {
				t.Fatal(err)
			}
			v, err := kinds.ToValue(n, info.Kind, "name")
			if err != nil {
				t.Fatal(err)
			}
			switch v := v.(type) {
			case netns.NsHandle:
				defer v.Close()
			case io.Closer:
				defer v.Close()
			default:
				t.Fatalf("ToValue returned %T, which cannot be closed", v)
			}
			if !tt.check(v) {
				t.Errorf("ToValue(%v) = %T", info.Kind, v)
			}
		})
	}
}

// TestVerifyAllTable checks that VerifyAll agrees with Verify, one
// descriptor at a time, and so with Detect, on every descriptor of the
// Detect table declared as every kind, through the ring and without it.
func TestVerifyAllTable(t *testing.T) {
	checkLeaks(t)
	var fds []int
	var names []string
	var real []kinds.Kind
	t.Cleanup(func() { fd.CloseAll(fds) })
	for _, tt := range descCases() {
		t.Run(tt.name, func(t *testing.T) {
			n := tt.open(t)
			info, err := kinds.Detect(n)
			if err != nil {
				t.Skipf("Detect: %v (TestDetect reports it)", err)
			}
			// A duplicate outlives the subtest's cleanups.
			d, err := fd.DupFD(n)
			if err != nil {
				t.Fatal(err)
			}
			fds = append(fds, d)
			names = append(names, tt.name)
			real = append(real, info.Kind)
		})
	}
	if len(fds) == 0 {
		t.Fatal("no descriptors")
	}
	// Enough copies that VerifyAll itself takes the ring for the kinds
	// other than TCP and UDP (verifyAllPaths also forces each path).
	var all []int
	var want []kinds.Kind
	for len(all) < 4200 {
		all = append(all, fds...)
		want = append(want, real...)
	}

	check := func(what string, want []kinds.Kind) {
		t.Helper()
		wi, werr := verifyEach(all, want)
		gi, gerr := verifyAllPaths(t, what, all, want)
		if gi != wi || !sameError(gerr, werr) {
			t.Errorf("%s: VerifyAll = %d, %v; Verify one by one: %d, %v", what, gi, gerr, wi, werr)
			return
		}
		var me *kinds.MismatchError
		if errors.As(werr, &me) && want[wi].Valid() && me.Got != real[wi%len(real)] {
			t.Errorf("%s: the mismatch at %d names %s; Detect says %s", what, wi, me.Got, real[wi%len(real)])
		}
	}
	check("detected kinds", want)
	for p := range fds {
		// Invalid and one past Other too: Verify names no kind then.
		for k := kinds.Invalid; k <= kinds.Other+1; k++ {
			if k == want[p] {
				continue
			}
			bad := slices.Clone(want)
			bad[p] = k
			check(names[p]+" declared "+k.String(), bad)
		}
	}
}
