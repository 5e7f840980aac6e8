//go:build linux

package systemd_test

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful/systemd"
	"github.com/fdpass/fdpass/internal/childtest"
	"github.com/fdpass/fdpass/kinds"
)

// TestStoreStopStart is a stop/start cycle through the descriptor store,
// with the test playing systemd. Process A creates a TCP listener and a UDP
// socket, stores them and exits. With no process running, clients connect
// (the kernel queues them in the listener's backlog) and send datagrams.
// Process B is started with what the store holds, as LISTEN_FDS and
// LISTEN_FDNAMES, and serves all of them: no connection is refused and
// every datagram is answered.
func TestStoreStopStart(t *testing.T) {
	const conns, datagrams = 32, 32
	checkLeaks(t)
	peer := newNotifyPeer(t, false)
	notify := "NOTIFY_SOCKET=" + peer.addr

	a := startChild(t, "store-a", []string{notify})
	pidA := a.Pid()
	peer.expect(pidA, map[string]string{"STATUS": "listening"})
	web := peer.expect(pidA, map[string]string{"FDSTORE": "1", "FDNAME": "web"})
	dns := peer.expect(pidA, map[string]string{"FDSTORE": "1", "FDNAME": "dns"})
	peer.expect(pidA, map[string]string{"READY": "1"})
	peer.expect(pidA, map[string]string{"STOPPING": "1"})
	a.MustExit()
	peer.expectNothing()
	if len(web.FDs) != 1 || len(dns.FDs) != 1 {
		t.Fatalf("stored %d and %d descriptors, want 1 and 1", len(web.FDs), len(dns.FDs))
	}
	// The store checks what it holds, as a careful manager would.
	if err := kinds.Verify(web.FDs[0], kinds.TCPListener); err != nil {
		t.Fatal(err)
	}
	if err := kinds.Verify(dns.FDs[0], kinds.UDP); err != nil {
		t.Fatal(err)
	}
	webAddr, udpAddr := localAddr(t, web.FDs[0]), localAddr(t, dns.FDs[0])

	// No process serves now. Connect and send anyway.
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for i := range conns {
		c, err := net.Dial("tcp", webAddr)
		if err != nil {
			t.Fatalf("connection %d refused while stopped: %v", i, err)
		}
		clients = append(clients, c)
		if _, err := fmt.Fprintf(c, "conn-%d\n", i); err != nil {
			t.Fatal(err)
		}
	}
	var senders []net.Conn
	defer func() {
		for _, c := range senders {
			c.Close()
		}
	}()
	for i := range datagrams {
		c, err := net.Dial("udp", udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		senders = append(senders, c)
		if _, err := fmt.Fprintf(c, "dgram-%d", i); err != nil {
			t.Fatal(err)
		}
	}

	// Start B with the store's descriptors, as systemd does: duplicates
	// (the store keeps its own), as descriptors 3 and 4. The duplicates
	// are close-on-exec here, or B would inherit them twice.
	files := make([]*os.File, 2)
	for i, f := range []int{web.FDs[0], dns.FDs[0]} {
		d, err := fd.DupFD(f)
		must(t, err)
		files[i] = os.NewFile(uintptr(d), "stored")
		defer files[i].Close()
	}
	b := startActivated(t, "store-b", []string{notify,
		"WANT_CONNS=" + strconv.Itoa(conns), "WANT_DATAGRAMS=" + strconv.Itoa(datagrams)},
		[]string{"web", "dns"}, files...)
	pidB := b.Pid()

	var wg sync.WaitGroup
	errs := make(chan error, conns+datagrams)
	for i, c := range clients {
		wg.Go(func() { errs <- expectLine(c, fmt.Sprintf("B:conn-%d", i)) })
	}
	for i, c := range senders {
		wg.Go(func() { errs <- expectDatagram(c, fmt.Sprintf("B:dgram-%d", i)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	peer.expect(pidB, map[string]string{"READY": "1", "STATUS": "serving"})
	peer.expect(pidB, map[string]string{"STOPPING": "1"})
	b.MustExit()
	peer.expectNothing()
}

func localAddr(t testing.TB, n int) string {
	t.Helper()
	d, err := fd.DupFD(n)
	must(t, err)
	f := os.NewFile(uintptr(d), "stored")
	defer f.Close()
	if c, err := net.FilePacketConn(f); err == nil {
		defer c.Close()
		return c.LocalAddr().String()
	}
	ln, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func expectLine(c net.Conn, want string) error {
	if err := c.SetReadDeadline(deadline()); err != nil {
		return err
	}
	buf := make([]byte, len(want)+2)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("waiting for %q: %w", want, err)
	}
	if string(buf[:n]) != want+"\n" {
		return fmt.Errorf("got %q, want %q", buf[:n], want)
	}
	return nil
}

func expectDatagram(c net.Conn, want string) error {
	if err := c.SetReadDeadline(deadline()); err != nil {
		return err
	}
	buf := make([]byte, 128)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("waiting for %q: %w", want, err)
	}
	if string(buf[:n]) != want {
		return fmt.Errorf("got %q, want %q", buf[:n], want)
	}
	return nil
}

// Process A: listen, store, stop.
var _ = childtest.Register("store-a", func() error {
	leaks, err := countLeaks(0)
	if err != nil {
		return err
	}
	n, err := systemd.NewNotifier()
	if err != nil {
		return err
	}
	ln, err := listenTCP()
	if err != nil {
		return err
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer pc.Close()
	if err := n.Status("listening"); err != nil {
		return err
	}
	if err := store(n, "web", ln); err != nil {
		return err
	}
	if err := store(n, "dns", pc); err != nil {
		return err
	}
	if err := n.Ready(); err != nil {
		return err
	}
	if err := n.Stopping(); err != nil {
		return err
	}
	ln.Close()
	pc.Close()
	return leaks()
})

// store puts a duplicate of v's descriptor into the store under name.
func store(n *systemd.Notifier, name string, v any) error {
	d, err := fd.Dup(v)
	if err != nil {
		return err
	}
	defer fd.Close(d)
	return n.Store(name, d)
}

// Process B: adopt what the store passed and serve everything that
// queued meanwhile.
var _ = childtest.Register("store-b", func() error {
	conns, _ := strconv.Atoi(os.Getenv("WANT_CONNS"))
	datagrams, _ := strconv.Atoi(os.Getenv("WANT_DATAGRAMS"))
	leaks, err := countLeaks(2)
	if err != nil {
		return err
	}
	n, err := systemd.NewNotifier()
	if err != nil {
		return err
	}
	set, err := activate(2)
	if err != nil {
		return err
	}
	defer set.Close()
	ln, err := set.TakeListener("web")
	if err != nil {
		return err
	}
	pc, err := set.TakePacketConn("dns")
	if err != nil {
		ln.Close()
		return err
	}
	if err := set.Close(); err != nil {
		return err
	}
	if err := n.Notify("READY=1\nSTATUS=serving"); err != nil {
		return err
	}
	errs := make(chan error, 2)
	go func() { errs <- answerConns(ln, "B", conns) }()
	go func() { errs <- answerDatagrams(pc, "B", datagrams) }()
	for range 2 {
		if err := <-errs; err != nil {
			return err
		}
	}
	if err := n.Stopping(); err != nil {
		return err
	}
	return leaks()
})
