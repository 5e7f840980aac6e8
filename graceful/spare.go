package graceful

import (
	"net"
	"sync"
)

// A process out of descriptors, a flood of connections holding them all,
// must still hand over: that is what relieves it. What a handoff needs
// comes from descriptors kept in reserve (the handoff socket's accept
// loop keeps one, admit.go; the Process keeps spareFDs more, from New on)
// and from holding the process's own accepts (AcceptWait) while it uses
// them, so that its listeners, retrying, do not take what it frees.

// spareFDs is how many descriptors a Process keeps in reserve: starting a
// successor takes five at once (the pipe for its standard error, the one
// for exec's errors, a pidfd); a notification to systemd (READY=1,
// RELOADING=1, MAINPID=, STOPPING=1, FDSTOREREMOVE=1) one, its datagram
// socket; storing a socket in systemd's descriptor store two (the
// socket's duplicate and the notification's); the duplicate of a listener
// for the next handoff one.
const spareFDs = 8

// holdAccepts holds accepts (AcceptWait) until the release it returns is
// called (once; holds nest). A successor short of room holds them while
// its connections arrive (confirm), a predecessor out of descriptors
// while it starts its successor and hands over (useSpares).
func (p *Process) holdAccepts() (release func()) {
	p.mu.Lock()
	if p.holds == 0 {
		p.acceptHold = make(chan struct{})
	}
	p.holds++
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.holds--; p.holds == 0 {
				close(p.acceptHold)
				p.acceptHold = nil
			}
		})
	}
}

// acceptNow is AcceptWait's answer when accepts are not held.
var acceptNow = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// AcceptWait returns a channel that is closed when this process may
// accept a connection: at once, except while a handoff needs the room
// that accepting would take. A successor short of descriptors (its
// predecessor holds more open than there is room for under its
// RLIMIT_NOFILE) holds accepts while the connections it takes arrive,
// from READY to the end of the migration's main phase (HANDOFF.md,
// "Connection migration"); a predecessor out of descriptors, while it
// starts its successor and hands over. New connections wait in the
// listeners' backlog meanwhile. HTTPServer waits for it before each
// accept; an accept loop of the application's own should too (receive
// from the channel, then Accept): otherwise, under a flood of
// connections, what it accepts can take the room the handoff needs, and
// the takeover fails and rolls back. An accept loop the application does
// not own (grpc.Server's Serve, a framework's) gets the wait from
// WaitListener.
func (p *Process) AcceptWait() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.acceptHold != nil {
		return p.acceptHold
	}
	return acceptNow
}

// WaitListener returns ln with an Accept that first waits for AcceptWait,
// for an accept loop the application does not own: serve with
// grpcServer.Serve(p.WaitListener(ln)), say. Closing it closes ln, and
// ends a wait in Accept, which then returns ln's error for a closed
// listener. Only Accept and Close differ from ln's; the value is not a
// *net.TCPListener.
func (p *Process) WaitListener(ln net.Listener) net.Listener {
	return &waitListener{Listener: ln, p: p, closed: make(chan struct{})}
}

type waitListener struct {
	net.Listener
	p      *Process
	once   sync.Once
	closed chan struct{}
}

func (l *waitListener) Accept() (net.Conn, error) {
	select {
	case <-l.p.AcceptWait():
	case <-l.closed:
	}
	return l.Listener.Accept()
}

func (l *waitListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// useSpares holds accepts and closes the spare descriptors. ok is false,
// and nothing is held, if there were none; otherwise release opens them
// again and ends the hold.
func (p *Process) useSpares() (release func(), ok bool) {
	hold := p.holdAccepts()
	p.mu.Lock()
	ok = p.spare.release()
	p.mu.Unlock()
	if !ok {
		hold()
		return nil, false
	}
	return func() {
		p.mu.Lock()
		if !p.closed {
			p.spare.refill(spareFDs)
		}
		p.mu.Unlock()
		hold()
	}, true
}

// withSpares runs f, and if it fails for want of a descriptor, runs it
// again on the spare descriptors (useSpares).
func (p *Process) withSpares(f func() error) error {
	err := f()
	if !outOfDescriptors(err) {
		return err
	}
	release, ok := p.useSpares()
	if !ok {
		return err
	}
	defer release()
	return f()
}
