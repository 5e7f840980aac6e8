// Package proc runs the example programs as separate processes for the
// demo and the end-to-end tests: it builds them, starts them and follows
// the event lines they print on standard output.
//
// When the binary that uses it runs under the race detector, the examples
// are built with it too, and a data race that an example reports on its
// standard error is an error of its Instance (Races, Wait).
package proc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Build compiles the example package pkg (an import path) into dir and
// returns the binary's path. It builds with -race when this binary runs
// under the race detector.
func Build(dir, pkg string) (string, error) {
	bin := filepath.Join(dir, filepath.Base(pkg))
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go %s: %w", strings.Join(cmd.Args[1:], " "), err)
	}
	return bin, nil
}

// Instance is one running example process.
type Instance struct {
	cmd    *exec.Cmd
	lines  chan string
	done   chan struct{}
	err    error
	stderr *raceWatch

	mu    sync.Mutex
	words map[string]int // lines so far by their first word
}

// Start starts bin with args. Its standard error goes to ours.
func Start(bin string, args ...string) (*Instance, error) {
	cmd := exec.Command(bin, args...)
	w := &raceWatch{w: os.Stderr}
	// An io.Writer rather than a file: Wait returns once all of it is
	// copied, so a report printed before the exit is seen.
	cmd.Stderr = w
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	in := &Instance{cmd: cmd, lines: make(chan string, 64), done: make(chan struct{}), stderr: w, words: map[string]int{}}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) > 0 {
				in.mu.Lock()
				in.words[f[0]]++
				in.mu.Unlock()
			}
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

// Count returns how many lines the process has written so far whose first
// word is word, whether or not Await saw them.
func (in *Instance) Count(word string) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.words[word]
}

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
			return "", fmt.Errorf("process %d: no %q within %s (%s)", in.PID(), prefix, d, in.state())
		}
	}
}

// state describes what the process is doing, from /proc: its scheduler
// state and the CPU time it used, which tell a process starved of CPU
// from one blocked waiting.
func (in *Instance) state() string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", in.PID()))
	if err != nil {
		return "no /proc entry: " + err.Error()
	}
	// The fields after the command name, which is in parentheses:
	// state is the first, utime and stime the 12th and 13th.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return fmt.Sprintf("unreadable stat %q", b)
	}
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return fmt.Sprintf("state %s, %d ticks of user and %d of system CPU", f[0], utime, stime)
}

// Wait waits at most d for the process to exit and returns its error,
// and the data races it reported.
func (in *Instance) Wait(d time.Duration) error {
	select {
	case <-in.done:
		return errors.Join(in.err, in.Races())
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

// Races returns an error if the process has reported a data race on its
// standard error (see the race detector's GORACE options: the report goes
// there as soon as the race is found).
func (in *Instance) Races() error {
	if n := in.stderr.count(); n > 0 {
		return fmt.Errorf("process %d reported %d data races (see its standard error)", in.PID(), n)
	}
	return nil
}

// raceMark starts the race detector's report of a data race.
const raceMark = "WARNING: DATA RACE"

// raceWatch copies a process's standard error to w and counts the data
// races reported in it.
type raceWatch struct {
	w     *os.File
	mu    sync.Mutex
	tail  []byte // the end of the last write, in case the mark straddles two
	races int
}

func (rw *raceWatch) Write(b []byte) (int, error) {
	rw.mu.Lock()
	buf := append(rw.tail, b...)
	rw.races += bytes.Count(buf, []byte(raceMark))
	// Keep what could be the start of a mark, and never a whole one.
	keep := min(len(buf), len(raceMark)-1)
	rw.tail = append(rw.tail[:0], buf[len(buf)-keep:]...)
	rw.mu.Unlock()
	return rw.w.Write(b)
}

func (rw *raceWatch) count() int {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return rw.races
}
