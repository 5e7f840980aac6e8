//go:build linux

package systemd_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful/systemd"
	"github.com/fdpass/fdpass/internal/childtest"
	"github.com/fdpass/fdpass/kinds"
	"golang.org/x/sys/unix"
)

func listenTCP() (*net.TCPListener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// rawDup duplicates the descriptor behind v without close-on-exec, as a
// launcher hands descriptors to the process it starts.
func rawDup(t testing.TB, v syscall.Conn) int {
	t.Helper()
	rc, err := v.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n := -1
	var derr error
	if err := rc.Control(func(f uintptr) { n, derr = unix.Dup(int(f)) }); err != nil || derr != nil {
		t.Fatal(err, derr)
	}
	return n
}

// rawDupFD duplicates n without close-on-exec, as a launcher hands
// descriptors to the process it starts. Only for descriptors that a Set
// adopts (and makes close-on-exec) at once: children started meanwhile
// would inherit them.
func rawDupFD(t testing.TB, n int) int {
	t.Helper()
	d, err := unix.Dup(n)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// roundTrip dials network addr, writes a line and expects want back.
func roundTrip(network, addr, line, want string) error {
	c, err := net.Dial(network, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("%s %s: %w", network, addr, err)
	}
	if got != want+"\n" {
		return fmt.Errorf("%s %s: got %q, want %q", network, addr, got, want)
	}
	return nil
}

// echoOnce accepts one connection on ln and answers its first line with
// prefix+line.
func echoOnce(ln net.Listener, prefix string) error {
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	_, err = io.WriteString(c, prefix+line)
	return err
}

// serveListener checks that ln, taken from a Set, accepts on addr.
func serveListener(t testing.TB, ln net.Listener, network, addr string) {
	t.Helper()
	defer ln.Close()
	errc := make(chan error, 1)
	go func() { errc <- echoOnce(ln, "ok:") }()
	if err := roundTrip(network, addr, "ping", "ok:ping"); err != nil {
		t.Error(err)
	}
	if err := <-errc; err != nil {
		t.Error(err)
	}
}

func wantErr(t testing.TB, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: %v, want %v", what, err, want)
	}
}

// TestSet adopts descriptors of every socket kind, a file and a pipe, and
// takes them by name and by kind and address.
func TestSet(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	tcp4, err := listenTCP()
	must(t, err)
	anyLn, err := net.Listen("tcp", ":0") // [::] where there is IPv6, else 0.0.0.0
	must(t, err)
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	must(t, err)
	sockPath := filepath.Join(dir, "sock")
	ul, err := net.Listen("unix", sockPath)
	must(t, err)
	absName := fmt.Sprintf("@fdpass-systemd-test/set/%d", os.Getpid())
	al, err := net.Listen("unix", absName)
	must(t, err)
	gram, err := net.ListenPacket("unixgram", filepath.Join(dir, "gram"))
	must(t, err)
	filePath := filepath.Join(dir, "file")
	must(t, os.WriteFile(filePath, []byte("content"), 0o600))
	file, err := os.Open(filePath)
	must(t, err)
	pr, pw, err := os.Pipe()
	must(t, err)

	values := []syscall.Conn{tcp4, anyLn.(*net.TCPListener), udp.(*net.UDPConn), ul.(*net.UnixListener), al.(*net.UnixListener), gram.(*net.UnixConn), file, pr, pw}
	names := []string{"web", "any", "dns", "sock", "abs", "gram", "file", "pipe", "pipe"}
	wantKinds := []kinds.Kind{kinds.TCPListener, kinds.TCPListener, kinds.UDP, kinds.UnixListener, kinds.UnixListener, kinds.UnixDatagram, kinds.File, kinds.File, kinds.File}
	var fds []int
	for _, v := range values {
		fds = append(fds, rawDup(t, v))
	}
	// Only the Set's descriptors remain.
	ul.(*net.UnixListener).SetUnlinkOnClose(false)
	for _, v := range values {
		v.(io.Closer).Close()
	}
	s, err := systemd.NewSet(fds, names)
	must(t, err)
	defer s.Close()

	for _, f := range fds {
		if ce, err := isCloexec(f); err != nil || !ce {
			t.Errorf("descriptor %d: close-on-exec %v, %v", f, ce, err)
		}
	}
	ds := s.Descriptors()
	if len(ds) != len(fds) {
		t.Fatalf("%d descriptors, want %d", len(ds), len(fds))
	}
	wantAddrs := []string{tcp4.Addr().String(), anyLn.Addr().String(), udp.LocalAddr().String(), sockPath, absName, gram.LocalAddr().String(), "", "", ""}
	for i, d := range ds {
		got := ""
		if d.Addr != nil {
			got = d.Addr.String()
		}
		if d.FD != fds[i] || d.Name != names[i] || d.Info.Kind != wantKinds[i] || got != wantAddrs[i] {
			t.Errorf("descriptor %d = {%d %q %s %q}, want {%d %q %s %q}", i, d.FD, d.Name, d.Info.Kind, got, fds[i], names[i], wantKinds[i], wantAddrs[i])
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// By kind and address.
	webAddr := tcp4.Addr().String()
	d, err := s.Match(kinds.TCPListener, "tcp", webAddr)
	must(t, err)
	if d.Name != "web" {
		t.Errorf("Match(tcp %s) = %q", webAddr, d.Name)
	}
	ln, err := kinds.ToListener(d.FD)
	must(t, err)
	serveListener(t, ln, "tcp", webAddr)
	_, err = s.Match(kinds.TCPListener, "tcp", webAddr)
	wantErr(t, "Match of a taken listener", err, systemd.ErrTaken)
	_, err = s.TakeListener("web")
	wantErr(t, "TakeListener of a taken listener", err, systemd.ErrTaken)
	webPort := strconv.Itoa(tcp4.Addr().(*net.TCPAddr).Port)
	_, err = s.Match(kinds.TCPListener, "tcp6", "[::1]:"+webPort)
	wantErr(t, "Match(tcp6) of an IPv4 listener", err, systemd.ErrNotFound)
	_, err = s.Match(kinds.UDP, "udp", webAddr)
	wantErr(t, "Match(udp) of a TCP address", err, systemd.ErrNotFound)

	anyPort := strconv.Itoa(anyLn.Addr().(*net.TCPAddr).Port)
	_, err = s.Match(kinds.TCPListener, "tcp", "127.0.0.1:"+anyPort)
	wantErr(t, "Match of a specific address against a wildcard", err, systemd.ErrNotFound)
	_, err = s.Match(kinds.TCPListener, "tcp", ":0")
	wantErr(t, "Match of port 0", err, systemd.ErrNotFound)
	if _, err = s.Match(kinds.TCPListener, "ip", ":1"); err == nil || errors.Is(err, systemd.ErrNotFound) {
		t.Errorf("Match of an unknown network: %v", err)
	}
	d, err = s.Match(kinds.TCPListener, "tcp", "0.0.0.0:"+anyPort)
	must(t, err)
	if d.Name != "any" {
		t.Errorf("Match(tcp 0.0.0.0:%s) = %q", anyPort, d.Name)
	}
	ln, err = kinds.ToListener(d.FD)
	must(t, err)
	serveListener(t, ln, "tcp", "127.0.0.1:"+anyPort)

	// By name.
	_, err = s.TakeListener("dns")
	wantErr(t, "TakeListener of a UDP socket", err, systemd.ErrNotFound)
	pc, err := s.TakePacketConn("dns")
	must(t, err)
	servePacket(t, pc)
	_, err = s.Match(kinds.UnixListener, "unixpacket", sockPath)
	wantErr(t, "Match(unixpacket) of a stream listener", err, systemd.ErrNotFound)
	d, err = s.Match(kinds.UnixListener, "unix", sockPath)
	must(t, err)
	ln, err = kinds.ToListener(d.FD)
	must(t, err)
	serveListener(t, ln, "unix", sockPath)
	ln, err = s.TakeListener("abs")
	must(t, err)
	serveListener(t, ln, "unix", absName)
	f, err := s.TakeFile("file")
	must(t, err)
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil || string(b) != "content" {
		t.Errorf("TakeFile(file) read %q, %v", b, err)
	}
	r, err := s.Take("pipe")
	must(t, err)
	w, err := s.Take("pipe")
	must(t, err)
	if r.FD == w.FD || r.FD != fds[7] || w.FD != fds[8] {
		t.Errorf("Take(pipe) twice = %d, %d; want %d, %d", r.FD, w.FD, fds[7], fds[8])
	}
	_, err = s.Take("pipe")
	wantErr(t, "a third Take(pipe)", err, systemd.ErrTaken)
	fd.Close(r.FD)
	fd.Close(w.FD)
	_, err = s.Take("nope")
	wantErr(t, "Take(nope)", err, systemd.ErrNotFound)
	_, err = s.Take("")
	wantErr(t, `Take("")`, err, systemd.ErrNotFound)

	// What nobody took is the Set's to close.
	if left := s.Descriptors(); len(left) != 1 || left[0].Name != "gram" {
		t.Errorf("left in the Set: %v", left)
	}
	must(t, s.Close())
	if left := s.Descriptors(); len(left) != 0 {
		t.Errorf("left in a closed Set: %v", left)
	}
	_, err = s.Take("gram")
	wantErr(t, "Take from a closed Set", err, net.ErrClosed)
	must(t, s.Close())
}

// TestSetIPv6 matches IPv6 sockets, and takes a descriptor whose name is
// empty (systemd allows it) by that name.
func TestSetIPv6(t *testing.T) {
	checkLeaks(t)
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	must(t, err)
	defer pc.Close()
	s, err := systemd.NewSet([]int{rawDup(t, ln.(*net.TCPListener)), rawDup(t, pc.(*net.UDPConn))}, []string{"", "dns6"})
	must(t, err)
	defer s.Close()
	addr, udpAddr := ln.Addr().String(), pc.LocalAddr().String()
	_, err = s.Match(kinds.TCPListener, "tcp4", "127.0.0.1:"+strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	wantErr(t, "Match(tcp4) of an IPv6 listener", err, systemd.ErrNotFound)
	_, err = s.Match(kinds.TCPListener, "tcp", ":"+strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	wantErr(t, "Match(tcp, wildcard) of [::1]", err, systemd.ErrNotFound)
	d, err := s.Match(kinds.UDP, "udp6", udpAddr)
	must(t, err)
	if d.Name != "dns6" {
		t.Errorf("Match(udp6 %s) = %q", udpAddr, d.Name)
	}
	fd.Close(d.FD)
	d, err = s.Match(kinds.TCPListener, "tcp", addr)
	must(t, err)
	if d.Name != "" {
		t.Errorf("Match(tcp %s) = %q", addr, d.Name)
	}
	fd.Close(d.FD)
	_, err = s.Take("")
	wantErr(t, `Take("") of a taken descriptor`, err, systemd.ErrTaken)
}

func servePacket(t testing.TB, pc net.PacketConn) {
	t.Helper()
	defer pc.Close()
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 64)
		n, from, err := pc.ReadFrom(buf)
		if err == nil {
			_, err = pc.WriteTo(append([]byte("ok:"), buf[:n]...), from)
		}
		errc <- err
	}()
	if err := datagramTrip(pc.LocalAddr().String(), "ping", "ok:ping"); err != nil {
		t.Error(err)
	}
	if err := <-errc; err != nil {
		t.Error(err)
	}
}

// datagramTrip sends msg to the UDP address addr from a fresh socket and
// expects want back.
func datagramTrip(addr, msg, want string) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	if err := c.SetReadDeadline(deadline()); err != nil {
		return err
	}
	buf := make([]byte, 128)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("udp %s: %w", addr, err)
	}
	if string(buf[:n]) != want {
		return fmt.Errorf("udp %s: got %q, want %q", addr, buf[:n], want)
	}
	return nil
}

func TestNilSet(t *testing.T) {
	var s *systemd.Set
	if ds := s.Descriptors(); ds != nil {
		t.Errorf("Descriptors() = %v", ds)
	}
	_, err := s.Take("web")
	wantErr(t, "Take", err, systemd.ErrNotFound)
	_, err = s.Match(kinds.TCPListener, "tcp", ":8080")
	wantErr(t, "Match", err, systemd.ErrNotFound)
	must(t, s.Close())
}

// TestNewSetError: a descriptor that is not open fails the Set, and the
// ones before it are closed.
func TestNewSetError(t *testing.T) {
	checkLeaks(t)
	fds := memfds(t, 2)
	open := rawDupFD(t, fds[0])
	closed := rawDupFD(t, fds[1])
	fd.Close(closed)
	_, err := systemd.NewSet([]int{open, closed}, nil)
	wantErr(t, "NewSet with a closed descriptor", err, systemd.ErrEnvironment)
	if isOpen(open) {
		t.Errorf("descriptor %d left open", open)
		fd.Close(open)
	}
}

// TestActivationEnvironment covers what can be tested in-process: every case
// that touches no descriptor.
func TestActivationEnvironment(t *testing.T) {
	me := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		name          string
		pid, n, names string // "-" is unset
		err           error
	}{
		{"unset", "-", "-", "-", nil},
		{"another process", strconv.Itoa(os.Getppid()), "2", "a:b", nil},
		{"no LISTEN_FDS", me, "-", "a", nil},
		{"zero", me, "0", "", nil},
		{"bad pid", "x", "1", "-", systemd.ErrEnvironment},
		{"empty pid", "", "1", "-", systemd.ErrEnvironment},
		{"bad count", me, "one", "-", systemd.ErrEnvironment},
		{"negative count", me, "-1", "-", systemd.ErrEnvironment},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			for k, v := range map[string]string{"LISTEN_PID": tc.pid, "LISTEN_FDS": tc.n, "LISTEN_FDNAMES": tc.names} {
				t.Setenv(k, v)
				if v == "-" {
					os.Unsetenv(k)
				}
			}
			s, err := systemd.Activation()
			if tc.err != nil {
				wantErr(t, "Activation", err, tc.err)
			} else if err != nil || s == nil || len(s.Descriptors()) != 0 {
				t.Errorf("Activation() = %v, %v; want an empty Set", s, err)
			}
			for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
				if v, ok := os.LookupEnv(k); ok {
					t.Errorf("%s=%q left set", k, v)
				}
			}
		})
	}
}

// TestActivationChild passes a TCP listener and a UDP socket to a child as
// systemd does, without names.
func TestActivationChild(t *testing.T) {
	checkLeaks(t)
	ln, err := listenTCP()
	must(t, err)
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	must(t, err)
	defer pc.Close()
	lf, err := fd.DupFile(ln, "tcp")
	must(t, err)
	defer lf.Close()
	pf, err := fd.DupFile(pc, "udp")
	must(t, err)
	defer pf.Close()
	c := startActivated(t, "activation-unnamed", []string{"WANT_ADDRS=" + ln.Addr().String() + "," + pc.LocalAddr().String()}, nil, lf, pf)
	c.MustExit()
}

var _ = childtest.Register("activation-unnamed", func() error {
	leaks, err := countLeaks(2)
	if err != nil {
		return err
	}
	set, err := activate(2)
	if err != nil {
		return err
	}
	want := strings.Split(os.Getenv("WANT_ADDRS"), ",")
	for i, d := range set.Descriptors() {
		if d.Name != systemd.UnknownName || d.Addr.String() != want[i] {
			return fmt.Errorf("descriptor %d: %q %v, want %q %s", i, d.Name, d.Addr, systemd.UnknownName, want[i])
		}
	}
	ln, err := set.TakeListener(systemd.UnknownName)
	if err != nil {
		return err
	}
	ln.Close()
	if _, err = set.TakeListener(systemd.UnknownName); !errors.Is(err, systemd.ErrTaken) {
		return fmt.Errorf("second TakeListener: %v, want ErrTaken", err)
	}
	pc, err := set.TakePacketConn(systemd.UnknownName)
	if err != nil {
		return err
	}
	pc.Close()
	if err := set.Close(); err != nil {
		return err
	}
	return leaks()
})

// activate calls Activation in a child that was passed n descriptors and
// checks what the package promises: the descriptors were inheritable and
// are now close-on-exec, the variables are gone, a second call finds
// nothing, and a process started now inherits none of them.
func activate(n int) (*systemd.Set, error) {
	for i := range n {
		ce, err := isCloexec(3 + i)
		if err != nil {
			return nil, err
		}
		if ce {
			return nil, fmt.Errorf("descriptor %d close-on-exec before Activation; the test proves nothing", 3+i)
		}
	}
	set, err := systemd.Activation()
	if err != nil {
		return nil, err
	}
	ds := set.Descriptors()
	if len(ds) != n {
		set.Close()
		return nil, fmt.Errorf("%d descriptors, want %d", len(ds), n)
	}
	var inodes []string
	for i, d := range ds {
		if d.FD != 3+i {
			set.Close()
			return nil, fmt.Errorf("descriptor %d is %d", i, d.FD)
		}
		if ce, err := isCloexec(d.FD); err != nil || !ce {
			set.Close()
			return nil, fmt.Errorf("descriptor %d: close-on-exec %v, %v after Activation", d.FD, ce, err)
		}
		id, err := fd.Identify(d.FD)
		if err != nil {
			set.Close()
			return nil, err
		}
		inodes = append(inodes, strconv.FormatUint(id.Ino, 10))
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if v, ok := os.LookupEnv(k); ok {
			set.Close()
			return nil, fmt.Errorf("%s=%q left set", k, v)
		}
	}
	if again, err := systemd.Activation(); err != nil || len(again.Descriptors()) != 0 {
		set.Close()
		return nil, fmt.Errorf("second Activation: %v, %v; want an empty Set", again.Descriptors(), err)
	}
	cmd := childtest.Command("no-inherit", childtest.Options{Env: []string{"INODES=" + strings.Join(inodes, ",")}, Unset: systemdEnv})
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		set.Close()
		return nil, fmt.Errorf("grandchild: %w", err)
	}
	return set, nil
}

var _ = childtest.Register("no-inherit", func() error {
	inodes := strings.Split(os.Getenv("INODES"), ",")
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the directory's own descriptor, gone
		}
		for _, ino := range inodes {
			if target == "socket:["+ino+"]" {
				return fmt.Errorf("inherited a passed descriptor: %s -> %s", e.Name(), target)
			}
		}
	}
	return nil
})

// TestActivationNamesMismatch: more descriptors than names is malformed;
// the child's passed descriptors are closed, since nothing can find them
// once the variables are gone.
func TestActivationNamesMismatch(t *testing.T) {
	checkLeaks(t)
	fds := memfds(t, 2)
	da, err := fd.DupFD(fds[0])
	must(t, err)
	db, err := fd.DupFD(fds[1])
	must(t, err)
	a, b := os.NewFile(uintptr(da), "a"), os.NewFile(uintptr(db), "b")
	defer a.Close()
	defer b.Close()
	c := startActivated(t, "activation-mismatch", nil, []string{"only-one"}, a, b)
	c.MustExit()
}

var _ = childtest.Register("activation-mismatch", func() error {
	leaks, err := countLeaks(2)
	if err != nil {
		return err
	}
	_, err = systemd.Activation()
	if !errors.Is(err, systemd.ErrEnvironment) {
		return fmt.Errorf("Activation: %v, want ErrEnvironment", err)
	}
	if isOpen(3) || isOpen(4) {
		return errors.New("passed descriptors left open")
	}
	return leaks()
})
