//go:build linux

package fuzz_test

import (
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/internal/fdtest"
	"github.com/fdpass/fdpass/kinds"
	"golang.org/x/sys/unix"
)

// sockets are the real descriptors the handoff targets hand to the code
// under test, one of each kind a peer may send: opened once per process,
// before the first descriptor count, and sent as duplicates (unixmsg's
// Batch.Add), so that a run leaves the count where it found it.
type sockets struct {
	tcpLn       net.Listener // 127.0.0.1
	tcpConn     net.Conn     // accepted on tcpLn
	tcpPeer     net.Conn     // its client end
	unixConn    net.Conn     // a SOCK_STREAM socketpair's end
	unixPeer    net.Conn
	packetConn  net.Conn // a SOCK_SEQPACKET socketpair's end
	packetPeer  net.Conn
	udp         net.PacketConn // 127.0.0.1
	devNull     *os.File
	seqListener *net.UnixListener // a SOCK_SEQPACKET listener, abstract name

	kinds map[any]kinds.Kind // of each, as unixmsg detects it
}

var (
	socketsOnce sync.Once
	socketsErr  error
	theSockets  sockets
)

// openSockets returns the process's sockets, opening them on first use.
func openSockets() (*sockets, error) {
	socketsOnce.Do(func() { socketsErr = theSockets.open() })
	return &theSockets, socketsErr
}

func (s *sockets) open() error {
	var err error
	if s.tcpLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return err
	}
	if s.tcpPeer, err = net.Dial("tcp", s.tcpLn.Addr().String()); err != nil {
		return err
	}
	if s.tcpConn, err = s.tcpLn.Accept(); err != nil {
		return err
	}
	if s.unixConn, s.unixPeer, err = socketpair(unix.SOCK_STREAM); err != nil {
		return err
	}
	if s.packetConn, s.packetPeer, err = socketpair(unix.SOCK_SEQPACKET); err != nil {
		return err
	}
	if s.udp, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
		return err
	}
	if s.devNull, err = os.Open(os.DevNull); err != nil {
		return err
	}
	name := fmt.Sprintf("@fdpass-fuzz-sockets-%d", os.Getpid())
	if s.seqListener, err = net.ListenUnix("unixpacket", &net.UnixAddr{Name: name, Net: "unixpacket"}); err != nil {
		return err
	}
	s.kinds = map[any]kinds.Kind{}
	for c := range byte(8) {
		v := s.value(c)
		n, info, err := kinds.FromValue(v)
		if err != nil {
			return err
		}
		fd.Close(n)
		s.kinds[v] = info.Kind
	}
	return nil
}

// socketKind returns the kind of v, one of theSockets.
func socketKind(v any) kinds.Kind { return theSockets.kinds[v] }

// socketpair returns both ends of a new unix socketpair of type typ, as
// net.Conns.
func socketpair(typ int) (net.Conn, net.Conn, error) {
	sp, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	var cs [2]net.Conn
	for i, s := range sp {
		f := os.NewFile(uintptr(s), "socketpair")
		cs[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			if i == 0 {
				syscall.Close(sp[1])
			} else {
				cs[0].Close()
			}
			return nil, nil, err
		}
	}
	return cs[0], cs[1], nil
}

// value returns the socket that choice c (taken modulo 8) names: what a
// peer may pass as a connection, right or wrong.
func (s *sockets) value(c byte) any {
	switch c % 8 {
	case 0, 6:
		return s.tcpConn
	case 1:
		return s.unixConn
	case 2:
		return s.packetConn
	case 3:
		return s.udp
	case 4:
		return s.devNull
	case 5:
		return s.tcpLn
	}
	return s.seqListener
}

// scripted returns the body of a fuzz target that runs run against fresh
// sockets with a script and a configuration byte (cfg's first, or 0), and
// checks that the open-descriptor count comes back to where it was.
func scripted(run func(socks *sockets, script []byte, cfg byte) error) func(*testing.T, []byte, []byte) {
	return func(t *testing.T, script, cfg []byte) {
		socks, err := openSockets()
		if err != nil {
			t.Fatal(err)
		}
		var c byte
		if len(cfg) > 0 {
			c = cfg[0]
		}
		before, err := fd.Count()
		if err != nil {
			t.Fatal(err)
		}
		if err := run(socks, script, c); err != nil {
			t.Fatalf("cfg %#x: %v", c, err)
		}
		if err := fdtest.AwaitCount(before); err != nil {
			t.Fatalf("cfg %#x: %v", c, err)
		}
	}
}

// scriptSeed is a seed of a scripted fuzz target: a script and a
// configuration, written to the target's corpus by name (add: given to
// f.Add too).
type scriptSeed struct {
	name        string
	script, cfg []byte
	add         bool
}

// addScriptSeeds registers seeds as the corpus of target.
func addScriptSeeds(target string, seeds func() []scriptSeed) bool {
	return addSeeds(func() map[string][][]byte {
		m := map[string][][]byte{}
		for _, s := range seeds() {
			m[target+"/"+s.name] = [][]byte{s.script, s.cfg}
		}
		return m
	})
}

// addScripts gives f the seeds marked add.
func addScripts(f *testing.F, seeds []scriptSeed) {
	for _, s := range seeds {
		if s.add {
			f.Add(s.script, s.cfg)
		}
	}
}
