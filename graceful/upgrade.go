package graceful

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/unixmsg"
)

// envStderr names, in a successor that Upgrade started, the descriptor of
// the predecessor's own standard error. Until READY the successor's
// standard error is a pipe that Upgrade reads, to tell why a successor
// failed; at READY the successor puts the inherited one back, so that no
// write of its own meets a pipe whose reader has gone (SIGPIPE).
const envStderr = "FDPASS_GRACEFUL_STDERR"

// upgradeRun is an Upgrade in progress.
type upgradeRun struct {
	pid    int         // the successor started; 0 until it runs
	result chan error  // the outcome of its handoff
	heard  atomic.Bool // a handoff with it began: its outcome will come
}

// Upgrade starts the successor and returns nil once it has taken over:
// the successor Upgrade started (matched by PID) said READY and, with
// migration, the connections moved. Otherwise it returns why, matching
// ErrUpgrade, and this process serves on: the successor exited (with its
// status and the last line it wrote to standard error), was refused, did
// not take over within Options.Timeout, failed after READY, or ctx ended.
// A successor that has not taken over is gone when Upgrade returns: one
// refused (by itself or by this process) finishes what it accepted and
// exits, and is killed if it has not within Options.Timeout; any other is
// killed. One upgrade runs at a
// time: a second call meanwhile gets ErrUpgrading.
//
// The successor is Options.Successor's command, by default this program
// again (the executable now at its path) with the same arguments,
// environment and working directory, its standard output and error ours.
// Call Upgrade after Ready; the Process's Exit closes when it succeeds.
func (p *Process) Upgrade(ctx context.Context) error {
	u := &upgradeRun{result: make(chan error, 1)}
	p.mu.Lock()
	var err error
	switch {
	case p.closed:
		err = net.ErrClosed
	case !p.started:
		err = ErrNotReady
	case p.handedOff:
		err = errors.New("graceful: a successor took over already")
	case p.upgrade != nil:
		err = ErrUpgrading
	}
	if err != nil {
		p.mu.Unlock()
		return fmt.Errorf("%w: %w", ErrUpgrade, err)
	}
	p.upgrade = u
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.upgrade = nil
		p.mu.Unlock()
	}()
	err = p.runUpgrade(ctx, u)
	if err != nil {
		p.log.Warn("graceful: upgrade failed; still serving", slog.Any("error", err))
		return fmt.Errorf("%w: %w", ErrUpgrade, err)
	}
	return nil
}

func (p *Process) runUpgrade(ctx context.Context, u *upgradeRun) error {
	endHold := func() {}
	defer func() { endHold() }()
	cmd, tail, err := p.startSuccessor(u)
	if outOfDescriptors(err) {
		// Out of descriptors (a flood of connections holds them all):
		// the spare ones, with accepts held until the upgrade is over,
		// so that the listeners do not take what they free. The
		// successor is what relieves such a process.
		if release, ok := p.useSpares(); ok {
			p.log.Warn("graceful: upgrade: out of descriptors; starting the successor on the spare ones, accepts held", slog.Any("error", err))
			endHold = release
			cmd, tail, err = p.startSuccessor(u)
		}
	}
	if err != nil {
		return err
	}
	p.log.Info("graceful: upgrade: started successor", slog.Int("successor", u.pid))
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	verdict, done := p.await(ctx, u, exited, tail)
	// Serving on after a refusal, or handed over: accept again now,
	// not once a refused successor has finished (endSuccessor).
	endHold()
	endHold = func() {}
	if verdict == nil {
		p.log.Info("graceful: upgrade: successor took over", slog.Int("successor", u.pid))
		return nil
	}
	if !done {
		p.endSuccessor(cmd, exited, verdict)
	}
	return verdict
}

// startSuccessor starts the successor, its standard error captured.
func (p *Process) startSuccessor(u *upgradeRun) (*exec.Cmd, *stderrTail, error) {
	cmd, err := p.successorCmd()
	if err != nil {
		return nil, nil, err
	}
	tail, stop, err := captureStderr(cmd)
	if err != nil {
		return nil, nil, fmt.Errorf("start successor: %w", err)
	}
	p.mu.Lock()
	err = cmd.Start()
	if err == nil {
		u.pid = cmd.Process.Pid
	}
	p.mu.Unlock()
	stop()
	if err != nil {
		return nil, nil, fmt.Errorf("start successor: %w", err)
	}
	return cmd, tail, nil
}

// endSuccessor ends the successor that did not take over, once the
// verdict is in. A refusal (the successor's, such as Options.Migrated's
// error, or the checks of this process) is one the successor knows of: it
// may have accepted connections since it started to serve, which are its
// own, and it finishes them and exits; it gets Options.Timeout for that.
// Any other (it timed out, the upgrade was cancelled) is killed at once:
// whatever it is doing, it does not take over now.
func (p *Process) endSuccessor(cmd *exec.Cmd, exited <-chan error, verdict error) {
	if errors.Is(verdict, ErrRefused) {
		t := time.NewTimer(p.opts.Timeout)
		defer t.Stop()
		select {
		case <-exited:
			return
		case <-t.C:
			p.log.Warn("graceful: upgrade: the failed successor did not exit; killing it", slog.Int("successor", cmd.Process.Pid), slog.Duration("after", p.opts.Timeout))
		}
	}
	cmd.Process.Kill()
	<-exited
}

// await waits for the verdict on the successor u started; done reports
// that its process has ended and been reaped.
func (p *Process) await(ctx context.Context, u *upgradeRun, exited <-chan error, tail *stderrTail) (verdict error, done bool) {
	timer := time.NewTimer(p.opts.Timeout)
	defer timer.Stop()
	select {
	case verdict = <-u.result:
		if verdict == nil || !isDisconnect(verdict) {
			return verdict, false
		}
		// It hung up: most likely it is exiting, and its status says
		// more.
		select {
		case werr := <-exited:
			return fmt.Errorf("successor pid %d %s before READY%s (%w)", u.pid, exitStatus(werr), tail.last(), verdict), true
		case <-time.After(time.Second):
			return verdict, false
		}
	case werr := <-exited:
		// Once a handoff with it began, its outcome comes soon (its
		// socket is closed), and may say more than the status: a
		// refusal, which the successor sends before it exits. Otherwise
		// an outcome may have come in the same instant.
		got := false
		select {
		case verdict = <-u.result:
			got = true
		default:
			if u.heard.Load() {
				select {
				case verdict = <-u.result:
					got = true
				case <-timer.C:
				case <-ctx.Done():
				}
			}
		}
		status := fmt.Sprintf("successor pid %d %s before READY%s", u.pid, exitStatus(werr), tail.last())
		switch {
		case !got:
			return errors.New(status), true
		case verdict == nil:
			return nil, true
		case isDisconnect(verdict):
			return fmt.Errorf("%s (%w)", status, verdict), true
		}
		return verdict, true
	case <-timer.C:
		return fmt.Errorf("%w: successor pid %d did not take over within %v%s", ErrTimeout, u.pid, p.opts.Timeout, tail.last()), false
	case <-ctx.Done():
		return fmt.Errorf("successor pid %d: %w", u.pid, ctx.Err()), false
	case <-p.closing:
		// A takeover settles before Exit closes, so before a Close
		// that follows it; it may have come in the same instant.
		select {
		case verdict = <-u.result:
			if verdict == nil {
				return nil, false
			}
		default:
		}
		return fmt.Errorf("successor pid %d: the process is closing: %w", u.pid, net.ErrClosed), false
	}
}

// hear notes that the handoff to the successor pid begins: if it is the
// Upgrade's, its outcome will be settled.
func (p *Process) hear(pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if u := p.upgrade; u != nil && u.pid == pid {
		u.heard.Store(true)
	}
}

// settle reports the outcome of the handoff to the successor pid to the
// Upgrade in progress, if any: its own successor's, or another's that
// took over meanwhile.
func (p *Process) settle(pid int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	u := p.upgrade
	switch {
	case u == nil:
		return
	case u.pid != pid && err == nil:
		err = fmt.Errorf("another successor, pid %d, took over", pid)
	case u.pid != pid:
		return
	}
	select {
	case u.result <- err:
	default:
	}
}

// successorCmd returns the command that starts the successor.
func (p *Process) successorCmd() (*exec.Cmd, error) {
	if p.opts.Successor != nil {
		return p.opts.Successor()
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("successor: %w", err)
	}
	// An executable replaced on disk since it started is the one to run.
	exe = strings.TrimSuffix(exe, " (deleted)")
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout = os.Stdin, os.Stdout
	return cmd, nil
}

// exitStatus says how a successor ended.
func exitStatus(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exited with status 0"
	case errors.As(err, &ee) && ee.Exited():
		return "exited with status " + strconv.Itoa(ee.ExitCode())
	case errors.As(err, &ee):
		return "ended: " + ee.String()
	}
	return "ended: " + err.Error()
}

// stderrTail keeps the last line a successor wrote to standard error,
// and copies everything to ours.
type stderrTail struct {
	mu   sync.Mutex
	line string
	done chan struct{} // closed when the pipe is read to its end
}

// last returns ": " and the last line, or "". It waits a little for the
// pipe to end, as it does soon after the successor exits.
func (t *stderrTail) last() string {
	if t == nil {
		return ""
	}
	select {
	case <-t.done:
	case <-time.After(time.Second):
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.line == "" {
		return ""
	}
	return ": " + t.line
}

// captureStderr, unless the command has a standard error of its own,
// gives it a pipe that a goroutine copies to ours, keeping the last line,
// and our own standard error as an extra descriptor named by envStderr,
// which the successor puts back at READY. stop closes this process's copy
// of the pipe's write end once the command has started.
func captureStderr(cmd *exec.Cmd) (*stderrTail, func(), error) {
	if cmd.Stderr != nil {
		return nil, func() {}, nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	cmd.Stderr = w
	cmd.ExtraFiles = append(cmd.ExtraFiles, os.Stderr)
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, envStderr+"="+strconv.Itoa(2+len(cmd.ExtraFiles)))
	t := &stderrTail{done: make(chan struct{})}
	go func() {
		defer close(t.done)
		defer r.Close()
		s := bufio.NewScanner(r)
		s.Buffer(make([]byte, 4096), 64<<10)
		for s.Scan() {
			line := s.Bytes()
			os.Stderr.Write(append(line, '\n'))
			if l := string(bytes.TrimSpace(line)); l != "" {
				t.mu.Lock()
				t.line = l
				t.mu.Unlock()
			}
		}
		// A line too long for the scanner: keep copying.
		io.Copy(os.Stderr, r)
	}()
	return t, func() { w.Close() }, nil
}

// serveRequest runs an upgrade that a requester asked for (MsgUpgrade)
// and answers with the verdict. It takes ownership of c.
func (p *Process) serveRequest(c *unixmsg.Conn, peer Peer, log *slog.Logger) {
	defer c.Close()
	// Close waits for the verdict rather than cut the answer off.
	p.untrack(c.UnixConn())
	log.Info("graceful: upgrade requested")
	// The requester waits for the verdict; it may hang up meanwhile.
	c.SetDeadline(time.Time{})
	err := p.Upgrade(context.Background())
	p.mu.Lock()
	pid := 0
	if p.handedOff {
		pid = p.successor
	}
	p.mu.Unlock()
	c.SetDeadline(time.Now().Add(refuseLinger))
	if err != nil {
		code := handoffmsg.CodeFailed
		if errors.Is(err, ErrUpgrading) {
			code = handoffmsg.CodeBusy
		}
		handoffmsg.SendError(c, code, err.Error())
		return
	}
	handoffmsg.Send(c, handoffmsg.Message{Type: handoffmsg.MsgUpgraded, PID: uint32(pid)})
}

// RequestUpgrade asks the process serving the handoff socket at path to
// upgrade (its Upgrade), and returns the PID of the successor that took
// over. It blocks until the verdict, or ctx ends. An error matching
// ErrUpgrade says why the upgrade failed; the running process serves on.
// The running process must run with this process's uid, and admit this
// one (Options.Authorize, with Role RoleRequester; by default the same
// uid).
//
// This is what a reload command runs: systemd's ExecReload=, or
// "docker exec CONTAINER prog -reload".
func RequestUpgrade(ctx context.Context, path string) (int, error) {
	if !supported {
		return 0, ErrUnsupported
	}
	uc, err := dialHandoff(path)
	if err != nil {
		if _, cerr := classifyDial(path, err); cerr != nil {
			return 0, cerr
		}
		return 0, fmt.Errorf("graceful: nothing serves the handoff socket %s: %w", path, err)
	}
	peer, err := peerCredentials(uc)
	if err == nil && peer.UID != uint32(os.Getuid()) {
		err = fmt.Errorf("%w: the handoff socket %s is served as uid %d, not %d", ErrUnauthorized, path, peer.UID, os.Getuid())
	}
	if err != nil {
		uc.Close()
		return 0, err
	}
	c, err := unixmsg.NewConn(uc, controlOptions(true))
	if err != nil {
		uc.Close()
		return 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := handoffmsg.Send(c, handoffmsg.Message{Type: handoffmsg.MsgUpgrade}); err != nil {
		return 0, fmt.Errorf("graceful: request upgrade of %s: %w", path, err)
	}
	m, err := handoffmsg.Receive(c)
	if err == nil {
		err = m.Expect(handoffmsg.MsgUpgraded)
	}
	switch {
	case err == nil:
		return int(m.PID), nil
	case ctx.Err() != nil:
		return 0, fmt.Errorf("graceful: request upgrade of %s: %w", path, ctx.Err())
	case errors.Is(err, ErrMalformed) && m.Type == handoffmsg.MsgError && m.Code == handoffmsg.CodeProtocol:
		return 0, fmt.Errorf("graceful: the process at %s does not take upgrade requests (an older version?): %w", path, err)
	}
	return 0, fmt.Errorf("graceful: request upgrade of %s: %w", path, err)
}

// takeStderr takes the descriptor envStderr names, if any.
func takeStderr() int {
	v, ok := os.LookupEnv(envStderr)
	if !ok {
		return -1
	}
	os.Unsetenv(envStderr)
	fd, err := strconv.Atoi(v)
	if err != nil || fd <= 2 || !setCloexec(fd) {
		return -1
	}
	return fd
}

// restoreStderr puts back the standard error a successor inherited from
// the process that started it, in place of the pipe Upgrade reads.
func (p *Process) restoreStderr() {
	if p.stderr < 0 {
		return
	}
	dupOnto(p.stderr, 2)
	closeFD(p.stderr)
	p.stderr = -1
}
