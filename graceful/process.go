package graceful

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/fdpass/fdpass/graceful/migrate"
	"github.com/fdpass/fdpass/graceful/systemd"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/unixmsg"
)

// Options configure a Process. A zero field means its default; only Path
// is required.
type Options struct {
	// Path is the handoff socket, the same for every generation: a file
	// system path, or "@name" for a Linux abstract socket.
	Path string
	Mode os.FileMode // of the socket file; 0600
	// Timeout bounds a handoff, from the predecessor's accept to DONE.
	// If zero, 30 seconds.
	Timeout time.Duration
	// Authorize admits a peer on the handoff socket. If nil, it must run
	// with this process's uid.
	Authorize func(Peer) error
	Logger    *slog.Logger // hears handoffs, refusals, rollbacks; nil: silent
	// Migrate turns on live migration (see Conn) on this side; both sides
	// must set it.
	Migrate bool
	// QuiesceTimeout bounds how long a predecessor waits for its tracked
	// connections to reach Handoff, from READY; the latecomers stay. If
	// zero, 5 seconds or half of Timeout, whichever is less.
	QuiesceTimeout time.Duration
	// Migrated, if set, sees the migrated connections before the
	// successor acknowledges them; an error refuses them and fails the
	// handoff. It must not read or write them.
	Migrated func([]*Conn) error
	// MaxMigrated and MaxMigratedBytes bound what a successor accepts in
	// a migration: connections, and their state and unread bytes all
	// together. More fails the handoff. If zero, 100,000 and 256 MiB.
	// A predecessor of this version sends no more connections than
	// MaxMigrated, nor than fit under the successor's descriptor limit
	// (FeatureCapacity, HANDOFF.md): the others stay with it and drain.
	MaxMigrated      int
	MaxMigratedBytes int64
	// Successor, if set, makes the command Upgrade starts (see Upgrade).
	Successor func() (*exec.Cmd, error)
	// Supervise keeps a supervisor in this process even when it is not
	// PID 1 of its PID namespace, where New always keeps one: set it when
	// the process runs under an init that exits with its only child
	// (docker run --init, tini), or is a container's main process without
	// being PID 1 (a pod that shares its PID namespace), or set
	// SuperviseEnv=1 in its environment.
	//
	// The supervisor is what New becomes in the first process: it runs
	// this program again, with the same arguments and environment, as a
	// generation of the service (where New returns), forwards SIGHUP,
	// SIGINT, SIGQUIT, SIGTERM, SIGUSR1 and SIGUSR2 to the generation
	// that serves, follows each takeover, reaps every process left to it,
	// and exits with the status of the generation that serves when that
	// one ends without a successor (128 plus the signal that killed it).
	// New does not return in the supervisor: what the program did before
	// New it did there too and keeps (open files, goroutines; deferred
	// calls do not run), and does again in each generation. Call New
	// early. Successors must be started by a generation (Upgrade, or
	// RequestUpgrade, which asks for it) with the environment it
	// inherited, which names the supervisor.
	Supervise bool

	// NoStore keeps the sockets this Process creates out of systemd's
	// descriptor store. By default, under systemd (NOTIFY_SOCKET set),
	// each listener and packet socket the Process creates goes to the
	// store at Ready, or at once when created after Ready, so that a
	// service restarted after a crash finds it; a generation's Ready
	// removes what it inherited or systemd passed and nothing used. The
	// unit needs FileDescriptorStoreMax= (see package graceful/systemd).
	NoStore bool
}

const (
	defaultMode    = 0o600
	defaultTimeout = 30 * time.Second
	defaultQuiesce = 5 * time.Second
)

// Process is one generation of a restartable service. Its methods are safe
// for concurrent use.
type Process struct {
	opts    Options
	log     *slog.Logger
	exit    chan struct{}
	closing chan struct{}     // closed when Close begins
	ns      string            // the network namespace New ran in
	mig     migrate.Tracker   // live migration (migrate.go)
	notify  *systemd.Notifier // nil outside systemd
	stderr  int               // envStderr's descriptor, or -1 (upgrade.go)
	// supervisor is the supervisor's address, in a generation that one
	// started; "" if none (supervise.go).
	supervisor string

	mu          sync.Mutex
	gen         uint64
	inherited   bool
	ready       bool  // Ready was called
	started     bool  // Ready returned nil
	noMigration error // ErrNoMigration, when this side wanted it and the predecessor did not
	closed      bool
	handedOff   bool
	successor   int  // the PID of the successor that took over
	owner       bool // the socket path is this generation's to remove
	exited      bool
	in          *inheritance               // the predecessor's offer, until Ready (successor.go)
	late        *unixmsg.Conn              // to the predecessor, while connections come late
	lateDone    chan struct{}              // closed when they no longer do
	acceptHold  chan struct{}              // closed when accepts may go on (spare.go)
	holds       int                        // holdAccepts not yet released
	sd          *systemd.Set               // descriptors systemd passed, until Ready
	sys         sdState                    // systemd bookkeeping (systemd.go)
	ln          *net.UnixListener          // the handoff listener
	regs        []registration             // what goes to the successor (listen.go)
	out         *unixmsg.Batch             // regs[:outN] as a batch, built lazily
	outN        int                        //
	conns       map[*net.UnixConn]struct{} // peers being served (admit.go)
	upgrade     *upgradeRun                // the Upgrade in progress (upgrade.go)
	spare       reserve                    // for a handoff out of descriptors (spare.go)
	serving     chan struct{}              // closed when the serve loop ends
	peers       sync.WaitGroup             // goroutines serving peers
}

// New starts this process's generation on the handoff socket at
// opts.Path: it receives the descriptors of a predecessor that answers
// there, or creates the socket (replacing one a dead process left). A live
// socket whose owner does not hand off is ErrAlreadyRunning.
//
// As PID 1 of its PID namespace, or with Options.Supervise, New does not
// return in the calling process: that process supervises the service, and
// New returns in the child it starts (see Options.Supervise).
func New(opts Options) (*Process, error) {
	if !supported {
		return nil, ErrUnsupported
	}
	if opts.Path == "" {
		return nil, errors.New("graceful: Options.Path is empty")
	}
	if opts.Mode == 0 {
		opts.Mode = defaultMode
	}
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	// The supervisor, if this process is to be one, runs here.
	sup, err := supervise(opts)
	if err != nil {
		return nil, err
	}
	p := &Process{opts: opts, log: opts.Logger, exit: make(chan struct{}), closing: make(chan struct{}), stderr: takeStderr(), supervisor: sup}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.log = p.log.With(slog.String("handoff", opts.Path))
	// The spare descriptors are taken once the handoff socket is found
	// (setUp).
	if err := p.initSystemd(); err != nil {
		return nil, err
	}
	q, err := p.start()
	if err != nil {
		p.systemdStopping(true)
		p.spare.release()
		return nil, err
	}
	return q, nil
}

// start finds the predecessor, or creates the handoff socket.
func (p *Process) start() (*Process, error) {
	opts := p.opts
	deadline := time.Now().Add(opts.Timeout)
	var last error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if attempt > maxAttempts || time.Now().After(deadline) {
				return nil, fmt.Errorf("%w: %w", ErrAlreadyRunning, last)
			}
			// The socket changed hands under us (a predecessor shutting
			// down, a racing start): look again shortly.
			time.Sleep(time.Duration(attempt) * 10 * time.Millisecond)
		}
		uc, err := dialHandoff(opts.Path)
		if err == nil {
			err = p.inherit(uc, deadline)
			if err == nil {
				return p, nil
			}
			if !errors.Is(err, errRetry) {
				return nil, err
			}
			last = err
			continue
		}
		var ln *net.UnixListener
		switch state, cerr := classifyDial(opts.Path, err); state {
		case pathAbsent:
			ln, err = listenHandoff(opts.Path, opts.Mode, false)
		case pathStale:
			p.log.Info("graceful: replacing stale handoff socket")
			ln, err = listenHandoff(opts.Path, opts.Mode, true)
		default:
			return nil, cerr
		}
		if errors.Is(err, errRetry) {
			last = err
			continue
		}
		if err != nil {
			return nil, err
		}
		p.setUp(false)
		p.ln = ln
		p.gen = 1
		p.owner = true
		p.register(ln, handoffmsg.RoleHandoff, "unixpacket", opts.Path, "")
		p.log.Info("graceful: created handoff socket", slog.Uint64("generation", p.gen))
		return p, nil
	}
}

const maxAttempts = 5

// setUp does what New needs done whatever the predecessor sends: a
// successor does it while its predecessor prepares the OFFER, which takes
// longer. It takes the spare descriptors, before anything accepts (a
// successor started under a flood of connections may find none to spare
// later, spare.go), and names this process's network namespace, which
// Listen matches sockets against (asking the kernel for the calling
// thread's on every call costs more than adopting the socket, and a
// process that serves another namespace says so with ListenInNetNS). With
// cookie set, it also reads the namespace's cookie (ownNetNS), for the
// inherited sockets. It may run more than once.
func (p *Process) setUp(cookie bool) ownNetNS {
	p.spare.refill(spareFDs)
	var own ownNetNS
	if cookie {
		own = currentOwnNetNS()
	} else {
		own.id = currentNetNS()
	}
	p.ns = own.id
	return own
}

// errRetry marks a failure that looking again at the socket may cure.
var errRetry = errors.New("graceful: handoff socket changed hands")

// Generation returns 1 for a process that created the handoff socket, its
// predecessor's plus one otherwise.
func (p *Process) Generation() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen
}

// Inherited reports whether the process received descriptors from a
// predecessor.
func (p *Process) Inherited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inherited
}

// Ready closes the inherited descriptors nothing adopted, tells the
// predecessor to stop (READY, then DONE) and serves the handoff socket for
// the next successor. Call it once everything listens, within the
// predecessor's Options.Timeout; if it fails (ErrHandoff) the predecessor
// keeps serving: finish the connections this process accepted meanwhile,
// which are its own (HTTPServer.Drain), Close the Process and exit.
//
// From Ready on, the signals meant for the service come to this process
// (a supervisor forwards them here, systemd takes it for the main
// process): call signal.Notify for those the program handles (SIGHUP,
// SIGTERM) before Ready, or their default action ends it.
func (p *Process) Ready() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return net.ErrClosed
	}
	if p.ready {
		p.mu.Unlock()
		return ErrReady
	}
	p.ready = true
	in := p.in
	p.in = nil
	p.mu.Unlock()
	if in == nil {
		p.restoreStderr()
	}
	var gone []string
	if in != nil {
		gone = p.systemdUnused(in)
		if unused := in.release(); unused > 0 {
			p.log.Info("graceful: closed unused inherited descriptors", slog.Int("count", unused))
		}
		late, err := p.confirm(in)
		if late {
			p.receiveLate(in.pred, in.pid)
		} else {
			in.pred.Close()
		}
		if err != nil {
			p.log.Error("graceful: handoff failed at READY", slog.Int("pid", in.pid), slog.Any("error", err))
			p.systemdAbandoned(in.pid)
			return fmt.Errorf("%w: predecessor pid %d: %w", ErrHandoff, in.pid, err)
		}
		p.log.Info("graceful: predecessor stopped; this generation serves", slog.Uint64("generation", p.Generation()))
	}
	p.systemdReady(gone)
	p.reportServing(os.Getpid())
	p.mu.Lock()
	p.owner = true
	defer p.mu.Unlock()
	if p.closed {
		return net.ErrClosed
	}
	p.started = true
	p.serving = make(chan struct{})
	go p.serve(p.serving)
	return nil
}

// Exit is closed when a successor has taken over, or the Process is
// closed: then stop accepting, drain, and exit.
func (p *Process) Exit() <-chan struct{} { return p.exit }

// HandedOff reports whether a successor has taken over.
func (p *Process) HandedOff() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.handedOff
}

func (p *Process) closeExit() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exited {
		p.exited = true
		close(p.exit)
	}
}

// Close stops serving the handoff socket, aborts a handoff in progress, and
// closes the descriptors the Process holds, migrated connections that
// MigratedConns did not return among them; what it returned to the caller
// stays open. Without a successor, the socket file is removed.
func (p *Process) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.closing)
	in, ln, serving := p.in, p.ln, p.serving
	p.in, p.ln = nil, nil
	for uc := range p.conns {
		uc.Close()
	}
	p.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	if serving != nil {
		<-serving
	}
	p.peers.Wait()
	if in != nil {
		in.release()
		in.pred.Close()
	}
	p.mu.Lock()
	out, handedOff, owner := p.out, p.handedOff, p.owner
	p.out, p.regs = nil, nil
	late, lateDone := p.late, p.lateDone
	p.mu.Unlock()
	if late != nil {
		// The predecessor resumes what it has not sent yet.
		late.SetDeadline(time.Unix(1, 0))
		<-lateDone
	}
	if out != nil {
		out.Close()
	}
	if owner && !handedOff && ln != nil {
		removeSocketFile(p.opts.Path)
	}
	// Migrated connections nobody took are the Process's.
	for _, c := range p.mig.Migrated() {
		c.Close()
	}
	// STOPPING=1 may need the spare descriptors (sdNotify): they go
	// last.
	p.systemdStopping(handedOff)
	p.mu.Lock()
	p.spare.release()
	p.mu.Unlock()
	p.closeExit()
	return nil
}
