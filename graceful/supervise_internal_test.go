//go:build linux

package graceful

import (
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fdpass/fdpass/internal/fdtest"
)

// TestSupervisorReports: the supervisor follows a report only from the
// generation that serves, about its own handoff socket, sent with its own
// uid; it ignores what else comes and closes the descriptors a report
// carries. Once it follows a generation it sees that one end, and learns
// its status from the pidfd when another process collected it. The
// test process plays the generation that serves; a child of it, the
// successor.
func TestSupervisorReports(t *testing.T) {
	fdtest.CheckLeaks(t)
	const path = "/run/svc/handoff.sock"
	s := &supervisor{
		log:    slog.New(slog.DiscardHandler),
		path:   path,
		endFD:  -1,
		reaped: map[int]unix.WaitStatus{},
		gone:   make(chan exitNote, 4),
	}
	var err error
	if s.sock, s.name, err = listenReports(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if s.sock >= 0 {
			unix.Close(s.sock)
		}
	}()
	self := os.Getpid()
	s.serving = self

	succ := exec.Command("sleep", "60")
	if err := succ.Start(); err != nil {
		t.Fatal(err)
	}
	defer succ.Process.Kill()
	pid := succ.Process.Pid
	if !s.descends(pid) {
		t.Fatalf("the test's child %d does not descend from it", pid)
	}
	if s.descends(os.Getppid()) {
		t.Fatalf("the test's parent %d descends from it", os.Getppid())
	}

	send := func(msg string, oob []byte) {
		t.Helper()
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if err := unix.Sendmsg(fd, []byte(msg), oob, &unix.SockaddrUnix{Name: s.name}, 0); err != nil {
			t.Fatalf("send %q: %v", msg, err)
		}
	}
	ignored := func(what string) {
		t.Helper()
		s.readReports()
		if s.serving != self || s.ended {
			t.Fatalf("%s: the supervisor follows %d (ended %t), want %d", what, s.serving, s.ended, self)
		}
	}
	report := servingWord + " " + strconv.Itoa(pid) + " "

	send("hello "+strconv.Itoa(pid)+" "+path, nil)
	ignored("another word")
	send(servingWord+" x "+path, nil)
	send(servingWord+" -4 "+path, nil)
	send(servingWord+" "+strconv.Itoa(pid), nil)
	ignored("malformed reports")
	send(report+"/run/other/handoff.sock", nil)
	ignored("a report about another handoff socket")
	// Descriptors that come with a report are closed (the leak check
	// counts them), and the report ignored.
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	send(report+path+" and more", unix.UnixRights(pipe[0], pipe[1]))
	unix.Close(pipe[0])
	unix.Close(pipe[1])
	ignored("a report with descriptors")
	if os.Getuid() == 0 {
		// Root may send credentials other than its own.
		send(report+path, unix.UnixCredentials(&unix.Ucred{Pid: int32(self), Uid: 65534, Gid: 65534}))
		ignored("a report from another uid")
	} else {
		t.Log("not root: the report from another uid is not tried")
	}

	// The generation that serves names its successor.
	if err := sendServing(s.name, pid, path); err != nil {
		t.Fatal(err)
	}
	s.readReports()
	if s.serving != pid || s.ended {
		t.Fatalf("the supervisor follows %d (ended %t), want the successor %d", s.serving, s.ended, pid)
	}
	// The predecessor, serving no more, cannot take it back, nor can a
	// process that does not descend from the supervisor name itself.
	if err := sendServing(s.name, self, path); err != nil {
		t.Fatal(err)
	}
	s.readReports()
	if s.serving != pid {
		t.Fatalf("a report from the old generation moved the supervisor to %d", s.serving)
	}

	// The successor ends, collected by its parent (this process): the
	// watch says so, and the pidfd keeps its status where the kernel can.
	succ.Process.Signal(syscall.SIGTERM)
	succ.Wait()
	var n exitNote
	select {
	case n = <-s.gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the end of the successor was not seen")
	}
	s.watched(n)
	if !s.ended || s.endFD < 0 {
		t.Fatalf("after the successor's end: ended %t, pidfd %d", s.ended, s.endFD)
	}
	if ws, ok := pidfdExitStatus(s.endFD); ok {
		s.status, s.known = ws, true
		if code := s.exitCode(); code != 128+int(syscall.SIGTERM) {
			t.Fatalf("exit code %d, want %d", code, 128+int(syscall.SIGTERM))
		}
	} else {
		t.Log("this kernel does not keep the status for a pidfd (PIDFD_INFO_EXIT, Linux 6.15)")
	}
	unix.Close(s.endFD)

	// A report to a supervisor that is gone fails, and leaks nothing.
	unix.Close(s.sock)
	s.sock = -1
	if err := sendServing(s.name, pid, path); err == nil {
		t.Fatal("a report to a closed supervisor socket succeeded")
	}
}
