package childtest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/internal/fdtest"
)

func TestMain(m *testing.M) { Main(m) }

var _ = Register("talk", func() error {
	fmt.Println("hello")
	fmt.Printf("env CT_VALUE=%q unset=%t\n", os.Getenv("CT_VALUE"), os.Getenv("CT_UNSET") == "")
	fmt.Print("no newline at the end")
	return nil
})

var _ = Register("fail", func() error { return errors.New("boom") })

var _ = Register("write-fd3", func() error {
	f := os.NewFile(3, "parent")
	defer f.Close()
	_, err := io.WriteString(f, "through descriptor 3")
	return err
})

var _ = Register("silent", func() error {
	time.Sleep(time.Minute) // killed by the test's cleanup
	return nil
})

func TestExpectAndEnvironment(t *testing.T) {
	fdtest.CheckLeaks(t)
	t.Setenv("CT_UNSET", "set in the parent")
	c := Start(t, "talk", Options{Env: []string{"CT_VALUE=v1"}, Unset: []string{"CT_UNSET"}})
	if got := c.Expect("env"); got != `env CT_VALUE="v1" unset=true` {
		t.Errorf("Expect(env) = %q", got)
	}
	// A last line without a newline still counts.
	if got := c.Expect("no newline"); got != "no newline at the end" {
		t.Errorf("Expect(no newline) = %q", got)
	}
	c.MustExit()
	want := []string{"hello", `env CT_VALUE="v1" unset=true`, "no newline at the end"}
	if got := c.Output(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Output() = %q, want %q", got, want)
	}
}

func TestPrefixAndFiles(t *testing.T) {
	fdtest.CheckLeaks(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := Start(t, "write-fd3", Options{
		Prefix: []string{"/bin/sh", "-c", `exec "$0" "$@"`},
		Files:  []*os.File{w},
	})
	w.Close()
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "through descriptor 3" {
		t.Errorf("read %q, %v from the child's descriptor 3", got, err)
	}
	c.MustExit()
}

func TestFailures(t *testing.T) {
	fdtest.CheckLeaks(t)
	for _, tc := range []struct {
		role   string
		status int
		says   string
	}{
		{"fail", 1, "child fail (pid "},
		{"no-such-role", 2, `childtest: unknown role "no-such-role"`},
	} {
		t.Run(tc.role, func(t *testing.T) {
			c := Start(t, tc.role, Options{Stderr: true})
			var ee *exec.ExitError
			if err := c.Wait(); !errors.As(err, &ee) || ee.ExitCode() != tc.status {
				t.Errorf("Wait() = %v, want exit status %d", err, tc.status)
			}
			if out := strings.Join(c.Output(), "\n"); !strings.Contains(out, tc.says) {
				t.Errorf("output %q does not say %q", out, tc.says)
			}
		})
	}
}

// fatalTB records a Fatalf and ends the goroutine that called it, as
// testing's does.
type fatalTB struct {
	testing.TB
	msg chan string
}

func (f fatalTB) Helper() {}

func (f fatalTB) Fatalf(format string, args ...any) {
	f.msg <- fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// expectFails runs c.Expect(s) with a TB that records the failure.
func expectFails(c *Child, s string) (string, bool) {
	ftb := fatalTB{TB: c.t, msg: make(chan string, 1)}
	c.t = ftb
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Expect(s)
	}()
	<-done
	select {
	case m := <-ftb.msg:
		return m, true
	default:
		return "", false
	}
}

func TestExpectFails(t *testing.T) {
	fdtest.CheckLeaks(t)
	t.Run("ended", func(t *testing.T) {
		c := Start(t, "talk", Options{})
		msg, failed := expectFails(c, "never said")
		if !failed || !strings.Contains(msg, "ended without saying") {
			t.Errorf("Expect of a line never said: failed %t, %q", failed, msg)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		c := Start(t, "silent", Options{Timeout: 100 * time.Millisecond})
		start := time.Now()
		msg, failed := expectFails(c, "anything")
		if !failed || !strings.Contains(msg, "did not say") {
			t.Errorf("Expect of a silent child: failed %t, %q", failed, msg)
		}
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Errorf("Expect gave up after %v, before its timeout", d)
		}
	})
}
