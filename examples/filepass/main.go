//go:build linux

// Command filepass passes open files across restarts: an append-only log
// that every generation writes, and a memfd holding the service's state
// (the next line number and a lock), which each new generation reads where
// the last one left it. Lines stay numbered in order, each written once,
// however often the service is handed over.
//
//	go run ./examples/filepass -log /tmp/filepass.log &
//	go run ./examples/filepass -log /tmp/filepass.log &   # takes over
//	cat /tmp/filepass.log
//
// Both generations may write for a moment during a handoff; the lock in
// the shared memfd keeps their lines in order. The process reports
// "ready ... next=N" (the state it found) and "exit ... wrote=N".
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/fdpass/fdpass/examples/internal/cli"
	"github.com/fdpass/fdpass/graceful"
	"golang.org/x/sys/unix"
)

func main() {
	handoff := cli.Flags("filepass")
	logPath := flag.String("log", "/tmp/filepass.log", "the log `file` every generation appends to")
	every := flag.Duration("every", time.Millisecond, "time between lines")
	flag.Parse()
	handoff.Reload()
	if err := run(handoff.Path(), *logPath, *every); err != nil {
		log.Fatal(err)
	}
}

// state is the layout of the shared memfd.
type state struct {
	next  atomic.Uint64 // number of the next line
	owner atomic.Int32  // PID holding the lock, or 0
}

func run(sock, logPath string, every time.Duration) error {
	p, err := graceful.New(graceful.Options{Path: sock})
	if err != nil {
		return err
	}
	defer p.Close()
	logf, err := p.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	mf, err := p.File("state", newState)
	if err != nil {
		return err
	}
	defer mf.Close()
	mem, err := unix.Mmap(int(mf.Fd()), 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return os.NewSyscallError("mmap", err)
	}
	defer unix.Munmap(mem)
	st := (*state)(unsafe.Pointer(&mem[0]))
	if err := p.Ready(); err != nil {
		return err
	}
	fmt.Printf("ready pid=%d generation=%d inherited=%t next=%d\n", os.Getpid(), p.Generation(), p.Inherited(), st.next.Load())

	defer cli.UpgradeOnHUP(p)()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	tick := time.NewTicker(every)
	defer tick.Stop()
	wrote := 0
	for {
		select {
		case <-p.Exit():
		case <-sig:
		case <-tick.C:
			if err := writeLine(st, logf, p.Generation()); err != nil {
				return err
			}
			wrote++
			continue
		}
		break
	}
	fmt.Printf("exit pid=%d wrote=%d next=%d\n", os.Getpid(), wrote, st.next.Load())
	return nil
}

// newState creates the memfd for a first generation.
func newState() (*os.File, error) {
	mfd, err := unix.MemfdCreate("fdpass-filepass-state", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("memfd_create", err)
	}
	if err := unix.Ftruncate(mfd, int64(os.Getpagesize())); err != nil {
		unix.Close(mfd)
		return nil, os.NewSyscallError("ftruncate", err)
	}
	return os.NewFile(uintptr(mfd), "state"), nil
}

// writeLine appends the next numbered line under the shared lock.
func writeLine(st *state, logf *os.File, gen uint64) error {
	me := int32(os.Getpid())
	for !st.owner.CompareAndSwap(0, me) {
		// A holder that died (a generation killed mid-line) would keep
		// the lock for ever: take it over.
		if o := st.owner.Load(); o != 0 && unix.Kill(int(o), 0) == unix.ESRCH {
			st.owner.CompareAndSwap(o, 0)
		}
		runtime.Gosched()
	}
	defer st.owner.Store(0)
	n := st.next.Load()
	if _, err := fmt.Fprintf(logf, "%d pid=%d generation=%d\n", n, me, gen); err != nil {
		return err
	}
	st.next.Store(n + 1)
	return nil
}
