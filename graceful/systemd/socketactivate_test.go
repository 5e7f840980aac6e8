//go:build linux

package systemd_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fdpass/fdpass/internal/childtest"
	"github.com/fdpass/fdpass/kinds"
)

// socketActivate is Debian's tool (package systemd), which CI installs.
const socketActivate = "/usr/bin/systemd-socket-activate"

// freePorts returns n ports on 127.0.0.1 that were free a moment ago:
// systemd-socket-activate refuses port 0.
func freePorts(t testing.TB, network string, n int) []string {
	t.Helper()
	var ports []string
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for range n {
		var addr net.Addr
		if network == "udp" {
			c, err := net.ListenPacket("udp", "127.0.0.1:0")
			must(t, err)
			closers, addr = append(closers, c), c.LocalAddr()
		} else {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			must(t, err)
			closers, addr = append(closers, ln), ln.Addr()
		}
		_, port, _ := net.SplitHostPort(addr.String())
		ports = append(ports, port)
	}
	return ports
}

// TestSocketActivate runs the test binary under the real
// systemd-socket-activate with named sockets, once with TCP listeners and
// once with UDP sockets (the tool cannot mix them), and talks to what the
// child serves.
func TestSocketActivate(t *testing.T) {
	if _, err := os.Stat(socketActivate); err != nil {
		t.Skipf("%s not installed (Debian package systemd): %v", socketActivate, err)
	}
	const requests = 5
	for _, tc := range []struct {
		name    string
		network string
		names   []string
	}{
		{"stream", "tcp", []string{"web", "metrics", "admin"}},
		{"datagram", "udp", []string{"dns", "dns-alt"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			ports := freePorts(t, tc.network, len(tc.names))
			var args []string
			if tc.network == "udp" {
				args = append(args, "--datagram")
			}
			for _, p := range ports {
				args = append(args, "-l", "127.0.0.1:"+p)
			}
			args = append(args, "--fdname="+strings.Join(tc.names, ":"),
				"-E", childtest.Env+"=socket-activated",
				"-E", "SA_NETWORK="+tc.network,
				"-E", "SA_NAMES="+strings.Join(tc.names, ":"),
				"-E", "SA_REQUESTS="+strconv.Itoa(requests))
			c := childtest.Start(t, "socket-activated", childtest.Options{
				Prefix:  append([]string{socketActivate}, args...),
				Unset:   systemdEnv,
				Stderr:  true,
				Timeout: 10 * time.Second,
			})

			// The tool says "Listening on ADDR as FD." for each socket,
			// then waits for traffic before it execs the child.
			for range tc.names {
				c.Expect("Listening on ")
			}

			// Every request to every socket, at once: the first wakes the
			// tool, the rest wait in the kernel until the child serves.
			var wg sync.WaitGroup
			errs := make(chan error, len(tc.names)*requests)
			for i, name := range tc.names {
				addr := "127.0.0.1:" + ports[i]
				for j := range requests {
					wg.Go(func() {
						msg := fmt.Sprintf("req-%d", j)
						if tc.network == "udp" {
							errs <- datagramTrip(addr, msg, name+":"+msg)
						} else {
							errs <- roundTrip("tcp", addr, msg, name+":"+msg)
						}
					})
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			if err := c.Wait(); err != nil || t.Failed() {
				t.Errorf("child: %v\n%s", err, strings.Join(c.Output(), "\n"))
			}
		})
	}
}

// The child that systemd-socket-activate execs: it adopts the sockets by
// name, answers SA_REQUESTS requests on each with "name:request", and
// checks that it leaks nothing.
var _ = childtest.Register("socket-activated", func() error {
	names := strings.Split(os.Getenv("SA_NAMES"), ":")
	network := os.Getenv("SA_NETWORK")
	requests, err := strconv.Atoi(os.Getenv("SA_REQUESTS"))
	if err != nil {
		return err
	}
	leaks, err := countLeaks(len(names))
	if err != nil {
		return err
	}
	set, err := activate(len(names))
	if err != nil {
		return err
	}
	defer set.Close()
	for i, d := range set.Descriptors() {
		want := kinds.TCPListener
		if network == "udp" {
			want = kinds.UDP
		}
		if d.Name != names[i] || d.Info.Kind != want || !strings.HasPrefix(d.Addr.String(), "127.0.0.1:") {
			return fmt.Errorf("descriptor %d: %q %s %v, want %q %s on 127.0.0.1", i, d.Name, d.Info.Kind, d.Addr, names[i], want)
		}
	}
	// Adopt by name, in the reverse order of the descriptors, so the
	// names do the work.
	errs := make(chan error, len(names))
	for i := len(names) - 1; i >= 0; i-- {
		name := names[i]
		if network == "udp" {
			pc, err := set.TakePacketConn(name)
			if err != nil {
				return err
			}
			go func() { errs <- answerDatagrams(pc, name, requests) }()
		} else {
			ln, err := set.TakeListener(name)
			if err != nil {
				return err
			}
			go func() { errs <- answerConns(ln, name, requests) }()
		}
	}
	for range names {
		if err := <-errs; err != nil {
			return err
		}
	}
	if err := set.Close(); err != nil {
		return err
	}
	return leaks()
})

// answerConns answers n connections on ln, one line each, with
// prefix:line, then closes ln.
func answerConns(ln net.Listener, prefix string, n int) error {
	defer ln.Close()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		wg.Go(func() {
			defer c.Close()
			c.SetDeadline(deadline())
			line, err := bufio.NewReader(c).ReadString('\n')
			if err == nil {
				_, err = io.WriteString(c, prefix+":"+line)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// answerDatagrams answers n datagrams on pc with prefix:datagram, then
// closes pc.
func answerDatagrams(pc net.PacketConn, prefix string, n int) error {
	defer pc.Close()
	buf := make([]byte, 512)
	for range n {
		if err := pc.SetReadDeadline(deadline()); err != nil {
			return err
		}
		m, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		if _, err := pc.WriteTo(append([]byte(prefix+":"), buf[:m]...), from); err != nil {
			return err
		}
	}
	return nil
}
