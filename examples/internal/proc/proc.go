// Package proc runs the example programs as separate processes for the
// demo and the end-to-end tests: it builds them, starts them and follows
// the event lines they print on standard output.
package proc

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Build compiles the example package pkg (an import path) into dir and
// returns the binary's path.
func Build(dir, pkg string) (string, error) {
	bin := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s: %w", pkg, err)
	}
	return bin, nil
}

// Instance is one running example process.
type Instance struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
	err   error
}

// Start starts bin with args. Its standard error goes to ours.
func Start(bin string, args ...string) (*Instance, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	in := &Instance{cmd: cmd, lines: make(chan string, 64), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case in.lines <- sc.Text():
			default: // nobody is waiting for old lines
			}
		}
		in.err = cmd.Wait()
		close(in.done)
	}()
	return in, nil
}

// PID returns the process ID.
func (in *Instance) PID() int { return in.cmd.Process.Pid }

// Await returns the first line, from now on, that starts with prefix.
func (in *Instance) Await(prefix string, d time.Duration) (string, error) {
	timeout := time.After(d)
	for {
		select {
		case l := <-in.lines:
			if strings.HasPrefix(l, prefix) {
				return l, nil
			}
		case <-in.done:
			// Lines printed just before the exit may still be queued.
			for {
				select {
				case l := <-in.lines:
					if strings.HasPrefix(l, prefix) {
						return l, nil
					}
				default:
					return "", fmt.Errorf("process %d exited before %q: %v", in.PID(), prefix, in.err)
				}
			}
		case <-timeout:
			return "", fmt.Errorf("process %d: no %q within %s", in.PID(), prefix, d)
		}
	}
}

// Wait waits at most d for the process to exit and returns its error.
func (in *Instance) Wait(d time.Duration) error {
	select {
	case <-in.done:
		return in.err
	case <-time.After(d):
		return fmt.Errorf("process %d still running after %s", in.PID(), d)
	}
}

// Exited reports whether the process has exited.
func (in *Instance) Exited() bool {
	select {
	case <-in.done:
		return true
	default:
		return false
	}
}

// Kill kills the process if it still runs and waits for it.
func (in *Instance) Kill() {
	if !in.Exited() {
		in.cmd.Process.Kill()
		<-in.done
	}
}

// Field returns the value of key in an event line "word key=value ...".
func Field(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}
