//go:build linux

package fuzz_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/kinds"
	"golang.org/x/sys/unix"
)

// FuzzVerifyAll checks kinds.VerifyAll on batches of 1,024 to 8,192
// descriptors: sockets of the kinds it reads through io_uring (from
// kinds.MinRingSockets system calls' worth, 4,096; below that, and for
// every other kind, one at a time on every processor; kinds'
// TestVerifyAllPath shows which path runs) and descriptors of other kinds
// beside them, with TCP and UDP descriptors between them, some declared
// wrongly and some numbers not open. Each byte of picks adds one
// descriptor of the ring pool, bits 0-6 choosing it and, when bit 7 is
// set, bits 4-6 one from the pool of TCP and UDP before it; picks is
// walked round until the batch holds 1,024 plus size (a little-endian
// uint16, modulo 7,168) of them. wrong holds up to 8 declarations of 3 bytes: a
// position (uint16, modulo the batch) and a kind (modulo 11, so invalid
// kinds too).
//
// Invariants: VerifyAll returns what Verify, one descriptor at a time,
// finds first (the same index, the same mismatch or error); a mismatch
// with a valid declared kind names the kind Detect sees; a number that was not open stays closed; and
// once the run's descriptors are closed, the process has as many open as
// before.
func FuzzVerifyAll(f *testing.F) {
	for _, s := range verifyAllSeeds() {
		if s.add {
			f.Add(s.picks, s.wrong, s.size)
		}
	}
	f.Fuzz(func(t *testing.T, picks, wrong, size []byte) {
		before, err := fd.Count()
		if err != nil {
			t.Fatal(err)
		}
		if err := verifyAllRun(t.TempDir(), picks, wrong, size); err != nil {
			t.Fatal(err)
		}
		after, err := fd.Count()
		if err != nil {
			t.Fatal(err)
		}
		if after != before {
			t.Fatalf("descriptor leak: %d open before, %d after", before, after)
		}
	})
}

// vaEntry is a pool descriptor and its kind as Detect sees it; fd -1
// stands for the lowest number not open, found just before the check.
type vaEntry struct {
	fd   int
	kind kinds.Kind
}

// vaPools opens the descriptors that batches are made of: ring holds
// sockets other than TCP and UDP (four calls each one at a time, through
// the ring in large batches) and descriptors that are not sockets, one
// holds TCP and UDP sockets.
// The returned function closes them all.
func vaPools(dir string) (ring, one []vaEntry, closeAll func(), err error) {
	var opened []int
	closeAll = func() { fd.CloseAll(opened) }
	add := func(pool *[]vaEntry, n int, err error) error {
		if err != nil {
			return err
		}
		opened = append(opened, n)
		info, err := kinds.Detect(n)
		if err != nil {
			return fmt.Errorf("detect %d: %w", n, err)
		}
		*pool = append(*pool, vaEntry{n, info.Kind})
		return nil
	}
	toRing := func(n int, err error) error { return add(&ring, n, err) }
	sock := func(domain, typ, proto int) (int, error) {
		return unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
	}
	listener := func(domain, typ int, sa unix.Sockaddr) (int, error) {
		s, err := sock(domain, typ, 0)
		if err != nil {
			return -1, err
		}
		if err := unix.Bind(s, sa); err != nil {
			unix.Close(s)
			return -1, err
		}
		if typ != unix.SOCK_DGRAM {
			if err := unix.Listen(s, 4); err != nil {
				unix.Close(s)
				return -1, err
			}
		}
		return s, nil
	}
	pair := func(pool *[]vaEntry, typ int) error {
		p, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := add(pool, p[0], nil); err != nil {
			unix.Close(p[1])
			return err
		}
		return add(pool, p[1], nil)
	}
	open := func(name string, flags int) (int, error) {
		return unix.Open(name, flags|unix.O_CLOEXEC, 0)
	}
	file := filepath.Join(dir, "file")
	empty := filepath.Join(dir, "empty")
	steps := []func() error{
		func() error { return os.WriteFile(file, []byte("x"), 0o600) },
		func() error { return os.WriteFile(empty, nil, 0o600) },
		func() error {
			return toRing(listener(unix.AF_UNIX, unix.SOCK_STREAM, &unix.SockaddrUnix{}))
		},
		func() error {
			return toRing(listener(unix.AF_UNIX, unix.SOCK_SEQPACKET, &unix.SockaddrUnix{}))
		},
		func() error { return pair(&ring, unix.SOCK_STREAM) },
		func() error { return pair(&ring, unix.SOCK_SEQPACKET) },
		func() error { return pair(&ring, unix.SOCK_DGRAM) },
		func() error { return toRing(open(file, unix.O_RDONLY)) },
		func() error { return toRing(open(empty, unix.O_RDONLY)) },
		func() error { return toRing(open(dir, unix.O_RDONLY)) },
		func() error { return toRing(open(file, unix.O_PATH)) },
		func() error { return toRing(open("/dev/null", unix.O_RDWR)) },
		func() error { return toRing(open("/proc/self/ns/net", unix.O_RDONLY)) },
		func() error { return toRing(unix.Eventfd(0, unix.EFD_CLOEXEC)) },
		func() error {
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				return err
			}
			if err := add(&ring, p[0], nil); err != nil {
				unix.Close(p[1])
				return err
			}
			return add(&ring, p[1], nil)
		},
		func() error { return toRing(sock(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE)) },
		func() error { return toRing(sock(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP)) },
		func() error {
			ring = append(ring, vaEntry{-1, kinds.UnixConn})
			return nil
		},
		func() error {
			ln, err := listener(unix.AF_INET, unix.SOCK_STREAM, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
			if err := add(&one, ln, err); err != nil {
				return err
			}
			sa, err := unix.Getsockname(ln)
			if err != nil {
				return err
			}
			c, err := sock(unix.AF_INET, unix.SOCK_STREAM, 0)
			if err := add(&one, c, err); err != nil {
				return err
			}
			if err := unix.Connect(c, sa); err != nil {
				return err
			}
			s, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
			return add(&one, s, err)
		},
		func() error {
			s, err := sock(unix.AF_INET, unix.SOCK_DGRAM, 0)
			return add(&one, s, err)
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			closeAll()
			return nil, nil, nil, err
		}
	}
	return ring, one, closeAll, nil
}

func verifyAllRun(dir string, picks, wrong, size []byte) error {
	ring, one, closePools, err := vaPools(dir)
	if err != nil {
		return fmt.Errorf("opening the pools: %w", err)
	}
	defer closePools()
	if len(picks) == 0 {
		picks = []byte{0}
	}
	var sz [2]byte
	copy(sz[:], size)
	nRing := 1024 + int(binary.LittleEndian.Uint16(sz[:]))%7168
	var batch []vaEntry
	for i := range nRing {
		b := picks[i%len(picks)]
		if b&0x80 != 0 {
			batch = append(batch, one[int(b>>4&7)%len(one)])
		}
		batch = append(batch, ring[int(b&0x7f)%len(ring)])
	}
	fds := make([]int, len(batch))
	want := make([]kinds.Kind, len(batch))
	for i, e := range batch {
		fds[i], want[i] = e.fd, e.kind
	}
	for w := wrong; len(w) >= 3 && len(wrong)-len(w) < 8*3; w = w[3:] {
		want[int(binary.LittleEndian.Uint16(w))%len(want)] = kinds.Kind(w[2] % 11)
	}

	// The lowest number not open, which the next descriptor opened
	// (VerifyAll's ring, say) would take.
	closed, err := unix.FcntlInt(uintptr(one[0].fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return err
	}
	unix.Close(closed)
	for i := range fds {
		if fds[i] < 0 {
			fds[i] = closed
		}
	}

	wi, werr := -1, error(nil)
	for i, f := range fds {
		if err := kinds.Verify(f, want[i]); err != nil {
			wi, werr = i, err
			break
		}
	}
	gi, gerr := kinds.VerifyAll(fds, want)
	if gi != wi || !sameVerifyError(gerr, werr) {
		return fmt.Errorf("%d descriptors: VerifyAll = %d, %v; Verify one at a time: %d, %v", len(fds), gi, gerr, wi, werr)
	}
	var me *kinds.MismatchError
	if errors.As(werr, &me) && fds[wi] != closed && want[wi].Valid() && me.Got != batch[wi].kind {
		return fmt.Errorf("descriptor %d (%d) declared %s: the mismatch names %s, Detect %s", wi, fds[wi], want[wi], me.Got, batch[wi].kind)
	}
	if _, err := unix.FcntlInt(uintptr(closed), unix.F_GETFD, 0); err == nil {
		return fmt.Errorf("%d, not open before VerifyAll, is open after", closed)
	}
	return nil
}

// sameVerifyError reports whether a and b are both nil, equal mismatches,
// or other errors with the same message.
func sameVerifyError(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	var am, bm *kinds.MismatchError
	if errors.As(a, &am) != errors.As(b, &bm) {
		return false
	}
	if am != nil {
		return *am == *bm
	}
	return a.Error() == b.Error()
}

type verifyAllSeed struct {
	name               string
	picks, wrong, size []byte
	add                bool
}

var _ = addSeeds(func() map[string][][]byte {
	m := map[string][][]byte{}
	for _, s := range verifyAllSeeds() {
		m["FuzzVerifyAll/"+s.name] = [][]byte{s.picks, s.wrong, s.size}
	}
	return m
})

func verifyAllSeeds() []verifyAllSeed {
	// Pool order (vaPools): 0 unix listener, 1 seqpacket listener, 2-3
	// unix stream pair, 4-5 seqpacket pair, 6-7 unix datagram pair, 8
	// file, 9 empty file, 10 directory, 11 O_PATH file, 12 /dev/null, 13
	// network namespace, 14 eventfd, 15-16 pipe, 17 netlink, 18 raw TCP,
	// 19 a number not open; with bit 7, bits 4-6 pick 0 TCP listener, 1-2
	// TCP conns, 3 UDP.
	seq := func(b ...byte) []byte { return b }
	all := make([]byte, 19) // every kind of the pool but the number not open
	for i := range all {
		all[i] = byte(i)
	}
	named := seq(0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12) // unix sockets, a file, a directory, a device
	withOne := make([]byte, len(named))
	for i, b := range named {
		withOne[i] = b | 0x80 | byte(i%4)<<4
	}
	le := func(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
	at := func(pos uint16, k kinds.Kind) []byte { return append(le(pos), byte(k)) }
	return []verifyAllSeed{
		{name: "named-1024", picks: named, add: true},
		{name: "named-4096", picks: named, size: le(3072 - 1)},
		{name: "named-8192", picks: named, size: le(7168 - 1)},
		{name: "every-kind", picks: all, size: le(1000), add: true},
		{name: "tcp-udp-between", picks: withOne, size: le(500), add: true},
		{name: "unix-listeners-only", picks: seq(0)},
		{name: "files-only", picks: seq(8, 10, 12)},
		{name: "namespaces-only", picks: seq(13)},
		{name: "wrong-first", picks: named, wrong: at(0, kinds.UDP), add: true},
		{name: "wrong-last", picks: named, wrong: at(1023, kinds.UnixDatagram)},
		{name: "wrong-middle-ring", picks: withOne, wrong: at(700, kinds.File), add: true},
		{name: "wrong-tcp", picks: withOne, wrong: at(1, kinds.UnixListener)},
		{name: "invalid-kinds", picks: all, wrong: append(at(5, kinds.Invalid), at(9, 10)...)},
		{name: "not-open", picks: append(seq(19), named...), add: true},
		{name: "not-open-late", picks: append(named, 19), size: le(200)},
		{name: "not-open-declared-tcp", picks: named, wrong: at(3, kinds.TCPConn)},
	}
}
