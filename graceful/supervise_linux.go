//go:build linux

package graceful

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The supervisor's side (see supervise.go). It runs the program again as
// its child, the first generation, with envSupervisor naming an abstract
// unix datagram socket, where generations say which one serves: "serving
// <pid> <handoff path>", with the sender's credentials from the kernel
// (SCM_CREDENTIALS). Each generation says so itself in Ready, before it
// serves (so before a successor of its own can), and a predecessor names
// its successor before its Exit closes (so before it can end, and before
// Upgrade's verdict). The supervisor reads the socket before it forwards
// a signal or decides that the service ended: whatever was said before
// is then known.
//
// The generation that serves may be the supervisor's child (the first
// one, or a successor whose predecessor has exited: as PID 1 or as a
// child subreaper the supervisor inherits orphans) or not yet (its
// predecessor still drains). The supervisor watches it through a pidfd,
// and takes its status from wait4 when it is its child, from the pidfd
// (PIDFD_INFO_EXIT, Linux 6.15) when its predecessor collected it.

const (
	// servingWord starts a report: "serving <pid> <path>". Other words
	// are ignored, so that a supervisor (which keeps running the binary
	// it started with) skips what later versions add.
	servingWord = "serving"
	// reportTimeout bounds a generation's wait to queue a report.
	reportTimeout = time.Second
	// exitInfoWait bounds the wait for the status of a generation that
	// another process collects.
	exitInfoWait = time.Second
	// maxReaped bounds the statuses kept of children reaped before a
	// report that names them is read.
	maxReaped = 64
	// maxDepth bounds the walk up the process tree from a report's
	// sender.
	maxDepth = 64
)

// forwardedSignals are the signals the supervisor passes on to the
// generation that serves. SIGQUIT is among them so that it dumps the
// server's goroutines, not the supervisor's.
func forwardedSignals() []os.Signal {
	return []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGUSR2}
}

// supervisor is the state of the supervising process. Only its run loop
// touches it.
type supervisor struct {
	log     *slog.Logger
	path    string        // the handoff socket: reports name it
	timeout time.Duration // how long it waits for the rest once the service ended
	sock    int           // where generations report; non-blocking
	name    string        // its abstract address

	serving int             // the generation that serves
	ended   bool            // serving has ended
	endedAt time.Time       //
	status  unix.WaitStatus // serving's status, when known
	known   bool            //
	endFD   int             // serving's pidfd once it ended, for its status; -1

	reaped map[int]unix.WaitStatus // children reaped since the reports were last read

	sigs     chan os.Signal // forwarded signals
	chld     chan os.Signal // SIGCHLD
	readable chan struct{}  // the report socket has something to read
	drained  chan struct{}  // ... and the run loop has read it
	gone     chan exitNote  // a watched generation ended
}

// exitNote says that the process pid has ended; fd is its pidfd, which
// the receiver closes.
type exitNote struct {
	pid, fd int
}

// runSupervisor makes this process the service's supervisor. It returns
// only if the first generation cannot be started.
func runSupervisor(opts Options, log *slog.Logger) error {
	if os.Getpid() != 1 {
		// Orphaned generations come to this process, not to the init
		// above it.
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("graceful: supervisor: %w", os.NewSyscallError("prctl", err))
		}
	}
	s := &supervisor{
		log:     log,
		path:    opts.Path,
		timeout: opts.Timeout,
		endFD:   -1,
		reaped:  map[int]unix.WaitStatus{},
		// Room for a burst: a signal that finds the channel full is
		// dropped. SIGCHLD has a channel of its own, which a burst of
		// others cannot fill: one pending is enough, as reaping looks
		// for every child.
		sigs:     make(chan os.Signal, 16),
		chld:     make(chan os.Signal, 1),
		readable: make(chan struct{}),
		drained:  make(chan struct{}),
		gone:     make(chan exitNote),
	}
	var err error
	if s.sock, s.name, err = listenReports(); err != nil {
		return fmt.Errorf("graceful: supervisor: %w", err)
	}
	// Before the child starts: its end, or a signal for it, must not be
	// missed.
	signal.Notify(s.sigs, forwardedSignals()...)
	signal.Notify(s.chld, syscall.SIGCHLD)
	pid, err := s.start()
	if err != nil {
		signal.Stop(s.sigs)
		signal.Stop(s.chld)
		unix.Close(s.sock)
		return fmt.Errorf("graceful: supervisor: start the service: %w", err)
	}
	log.Info("graceful: supervisor: started the service", slog.Int("pid", pid), slog.Int("supervisor", os.Getpid()))
	s.serving = pid
	s.watch(pid)
	go s.pollReports()
	os.Exit(s.run())
	return nil
}

// listenReports binds the datagram socket where generations report
// takeovers, at an abstract address nobody can guess.
func listenReports() (int, string, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	name := fmt.Sprintf("@fdpass-supervisor/%d/%x", os.Getpid(), rnd)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, "", os.NewSyscallError("socket", err)
	}
	// Each report comes with its sender's credentials.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		unix.Close(fd)
		return -1, "", os.NewSyscallError("setsockopt", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		unix.Close(fd)
		return -1, "", os.NewSyscallError("bind", err)
	}
	return fd, name, nil
}

// start starts the first generation: this executable with the same
// arguments and environment, and envSupervisor. It runs in a process
// group of its own, which its successors share: a terminal's signals
// (Ctrl-C) go to the generations once, and not to the supervisor as well,
// which would forward a second copy.
func (s *supervisor) start() (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	env := make([]string, 0, len(os.Environ())+1)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envSupervisor+"=") {
			env = append(env, kv)
		}
	}
	env = append(env, envSupervisor+"="+s.name)
	sys := &syscall.SysProcAttr{Setpgid: true}
	// Foreground of the terminal, if this process has it.
	fg := false
	if pg, err := unix.IoctlGetInt(0, unix.TIOCGPGRP); err == nil && pg == unix.Getpgrp() {
		fg = true
		sys.Foreground, sys.Ctty = true, 0
	}
	// Standard input, output and error as they are; closed ones closed.
	files := []uintptr{0, 1, 2}
	for i := range files {
		if _, err := unix.FcntlInt(uintptr(i), unix.F_GETFD, 0); err != nil {
			files[i] = ^uintptr(0)
		}
	}
	pid, err := syscall.ForkExec(exe, os.Args, &syscall.ProcAttr{Env: env, Files: files, Sys: sys})
	if err != nil {
		return 0, err
	}
	if fg {
		// In the background now: writing to the terminal must not stop
		// the supervisor.
		signal.Ignore(syscall.SIGTTOU, syscall.SIGTTIN)
	}
	return pid, nil
}

// run is the supervisor's loop. It returns the exit status.
func (s *supervisor) run() int {
	var deadline <-chan time.Time // once the service has ended
	tick := time.NewTicker(10 * time.Millisecond)
	tick.Stop()
	for {
		if s.ended {
			// Whatever a generation said before it ended is queued.
			s.readReports()
		}
		if s.ended {
			if deadline == nil {
				s.log.Info("graceful: supervisor: the service ended; waiting for the rest", slog.Int("pid", s.serving))
				deadline = time.After(s.timeout)
				tick.Reset(10 * time.Millisecond)
			}
			children := s.reap()
			if !s.known && s.endFD >= 0 {
				if ws, ok := pidfdExitStatus(s.endFD); ok {
					s.status, s.known = ws, true
				}
			}
			if !children && (s.known || time.Since(s.endedAt) > exitInfoWait) {
				return s.exitCode()
			}
		} else if deadline != nil {
			// A generation that was still starting took over.
			deadline = nil
			tick.Stop()
		}
		select {
		case sig := <-s.sigs:
			s.forward(sig.(syscall.Signal))
		case <-s.chld:
			s.reap()
		case <-s.readable:
			s.readReports()
			s.drained <- struct{}{}
		case n := <-s.gone:
			s.watched(n)
		case <-tick.C:
		case <-deadline:
			s.log.Warn("graceful: supervisor: processes still running after the service ended; leaving them", slog.Duration("waited", s.timeout))
			return s.exitCode()
		}
	}
}

// forward sends sig to the generation that serves.
func (s *supervisor) forward(sig syscall.Signal) {
	// To the generation that said it serves before the signal came.
	s.readReports()
	if s.ended {
		s.log.Info("graceful: supervisor: no generation serves; signal dropped", slog.String("signal", sig.String()))
		return
	}
	s.log.Debug("graceful: supervisor: forwarding signal", slog.String("signal", sig.String()), slog.Int("pid", s.serving))
	if err := unix.Kill(s.serving, sig); err != nil {
		s.log.Warn("graceful: supervisor: could not forward signal", slog.String("signal", sig.String()),
			slog.Int("pid", s.serving), slog.Any("error", os.NewSyscallError("kill", err)))
	}
}

// reap collects every child that has ended, and reports whether any
// child remains.
func (s *supervisor) reap() bool {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil: // ECHILD
			return false
		case pid == 0:
			return true
		}
		s.log.Debug("graceful: supervisor: reaped", slog.Int("pid", pid), slog.String("status", statusString(ws)))
		if pid == s.serving {
			s.end(ws, true)
			continue
		}
		if len(s.reaped) >= maxReaped {
			clear(s.reaped)
		}
		s.reaped[pid] = ws
	}
}

// end records that the generation that serves has ended, with ws if
// known.
func (s *supervisor) end(ws unix.WaitStatus, known bool) {
	if !s.ended {
		s.ended, s.endedAt = true, time.Now()
	}
	if known {
		s.status, s.known = ws, true
	}
}

// watch follows pid through a pidfd, so that its end is seen even when
// another process collects it.
func (s *supervisor) watch(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		// Gone already, and collected by its parent.
		s.end(0, false)
		return
	}
	if err != nil {
		s.log.Warn("graceful: supervisor: cannot watch the generation that serves; its end is seen only if this process collects it",
			slog.Int("pid", pid), slog.Any("error", os.NewSyscallError("pidfd_open", err)))
		return
	}
	go func() {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); !errors.Is(err, unix.EINTR) {
				break
			}
		}
		s.gone <- exitNote{pid: pid, fd: fd}
	}()
}

// watched handles the end of a watched process.
func (s *supervisor) watched(n exitNote) {
	if n.pid != s.serving || s.endFD >= 0 {
		unix.Close(n.fd)
		return
	}
	s.end(0, false)
	s.endFD = n.fd
}

// pollReports tells the run loop when the report socket has something to
// read, and waits until it has read it; only the run loop reads, so that
// it can look at the socket itself before it decides anything.
func (s *supervisor) pollReports() {
	fds := []unix.PollFd{{Fd: int32(s.sock), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			s.log.Error("graceful: supervisor: cannot read reports", slog.Any("error", os.NewSyscallError("poll", err)))
			return
		}
		s.readable <- struct{}{}
		<-s.drained
	}
}

// readReports reads the reports queued on the report socket.
func (s *supervisor) readReports() {
	var buf [512]byte
	// Room for the credentials only: the kernel closes the descriptors
	// that a sender pushes and that do not fit (MSG_CTRUNC);
	// reportSender closes any that come all the same.
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	for {
		n, oobn, flags, _, err := unix.Recvmsg(s.sock, buf[:], oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			if !errors.Is(err, unix.EAGAIN) {
				s.log.Error("graceful: supervisor: cannot read reports", slog.Any("error", os.NewSyscallError("recvmsg", err)))
			}
			break
		}
		from, err := reportSender(oob[:oobn])
		if err == nil && flags&unix.MSG_TRUNC != 0 {
			err = errors.New("report too long")
		}
		var pid int
		var path string
		if err == nil {
			pid, path, err = parseServing(buf[:n])
		}
		if err == nil && pid != 0 && path != s.path {
			err = fmt.Errorf("about another service: %q", path)
		}
		if err != nil {
			s.log.Warn("graceful: supervisor: ignored a report", slog.Int("from", from), slog.Any("error", err))
			continue
		}
		if pid != 0 {
			s.report(from, pid)
		}
	}
	// A report that names them would have been queued before they ended.
	clear(s.reaped)
}

// report handles from's report that pid serves. The generation that
// serves may name its successor; a generation may say that it serves
// itself, if it descends from this process (a process that the
// supervisor's children started).
func (s *supervisor) report(from, pid int) {
	switch {
	case pid == s.serving:
		return
	case from == s.serving:
	case from == pid && s.descends(pid):
	default:
		s.log.Warn("graceful: supervisor: ignored a report", slog.Int("from", from), slog.Int("serving", pid))
		return
	}
	s.log.Info("graceful: supervisor: a new generation serves", slog.Int("pid", pid), slog.Int("predecessor", s.serving))
	s.serving, s.ended, s.known = pid, false, false
	if s.endFD >= 0 {
		unix.Close(s.endFD)
		s.endFD = -1
	}
	if ws, ok := s.reaped[pid]; ok {
		// It has ended already, and this process collected it.
		s.end(ws, true)
		return
	}
	s.watch(pid)
}

// descends reports whether pid is a descendant of this process.
func (s *supervisor) descends(pid int) bool {
	self := os.Getpid()
	for range maxDepth {
		_, ppid, ok := procParent(pid)
		if !ok || ppid <= 1 {
			return ppid == self
		}
		if ppid == self {
			return true
		}
		pid = ppid
	}
	return false
}

// procParent returns a process's state and parent from /proc; ok is false
// if it does not exist.
func procParent(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// After the command name, in parentheses that it may hold too.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 2 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], ppid, true
}

// reportSender returns the pid of a report's sender, which must run with
// this process's uid. Descriptors that came with it are closed.
func reportSender(oob []byte) (int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, err
	}
	pid := 0
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_CREDENTIALS:
			cred, err := unix.ParseUnixCredentials(m)
			if err != nil {
				return 0, err
			}
			if int(cred.Uid) != os.Getuid() {
				return 0, fmt.Errorf("sent by uid %d", cred.Uid)
			}
			pid = int(cred.Pid)
		case unix.SCM_RIGHTS:
			// ParseUnixRights panics on a length that is not a multiple
			// of 4.
			if len(m.Data)%4 == 0 {
				fds, _ := unix.ParseUnixRights(m)
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
		}
	}
	if pid <= 0 {
		return 0, errors.New("no credentials")
	}
	return pid, nil
}

// parseServing parses "serving <pid> <path>"; another first word gives a
// pid of 0.
func parseServing(b []byte) (int, string, error) {
	word, rest, _ := strings.Cut(string(b), " ")
	if word != servingWord {
		return 0, "", nil
	}
	num, path, ok := strings.Cut(rest, " ")
	pid, err := strconv.Atoi(num)
	if !ok || err != nil || pid <= 0 {
		return 0, "", fmt.Errorf("malformed report %q", b)
	}
	return pid, path, nil
}

// exitCode is the status to exit with: the serving generation's, 128 plus
// the signal that ended it, or 1 if another process collected it and the
// kernel does not tell.
func (s *supervisor) exitCode() int {
	if !s.known {
		s.log.Warn("graceful: supervisor: the status of the generation that served is unknown (its predecessor collected it); exiting with 1", slog.Int("pid", s.serving))
		return 1
	}
	s.log.Info("graceful: supervisor: exiting", slog.Int("pid", s.serving), slog.String("status", statusString(s.status)))
	switch {
	case s.status.Exited():
		return s.status.ExitStatus()
	case s.status.Signaled():
		return 128 + int(s.status.Signal())
	}
	return 1
}

// pidfdExitStatus returns the status of the ended process fd refers to,
// once whoever is its parent has collected it (PIDFD_INFO_EXIT, Linux
// 6.15; earlier kernels do not tell).
func pidfdExitStatus(fd int) (unix.WaitStatus, bool) {
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_EXIT}
	if err := unix.IoctlPidfdInfo(fd, &info); err != nil || info.Mask&unix.PIDFD_INFO_EXIT == 0 {
		return 0, false
	}
	return unix.WaitStatus(info.Exit_code), true
}

func statusString(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return "exit status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}

// sendServing tells the supervisor at addr that pid serves the handoff
// socket at path from now on. It waits at most reportTimeout for room in
// the supervisor's queue.
func sendServing(addr string, pid int, path string) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(reportTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	msg := []byte(servingWord + " " + strconv.Itoa(pid) + " " + path)
	for {
		err = unix.Sendto(fd, msg, 0, &unix.SockaddrUnix{Name: addr})
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return os.NewSyscallError("sendto", err)
	}
	return nil
}
