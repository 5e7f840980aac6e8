package graceful

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
)

// Supervision: where a takeover must never end the service's first
// process. PID 1 of a PID namespace (a container's main process) takes
// every process of the namespace with it when it exits; so does, in
// effect, an init that exits with its only child (docker run --init,
// tini). There New keeps a thin supervisor in the first process: it runs
// the program again as its child (a generation), forwards the signals an
// operator sends to the generation that serves, follows each takeover,
// reaps every process left to it, and exits with the status of the last
// generation that serves, once that one ends without a successor. The
// supervisor's side is supervise_linux.go; a generation's, which tells it
// who serves, is reportServing.

// SuperviseEnv is the environment variable that turns the supervisor on
// ("1") or off ("0"), whatever Options.Supervise says and whether or not
// the process is PID 1. Unset or empty, Options.Supervise and PID 1
// decide.
const SuperviseEnv = "FDPASS_SUPERVISE"

// envSupervisor names, in a generation started by a supervisor, the
// address (an abstract unix socket) where the supervisor hears which
// generation serves.
// Successors inherit it with the environment, and it keeps each of them
// from supervising in turn.
const envSupervisor = "FDPASS_SUPERVISOR"

// supervise decides, in New, what this process is: the supervisor (it
// runs it, and does not return unless the service cannot start), a
// generation that a supervisor started (it returns the supervisor's
// address), or neither ("").
func supervise(opts Options) (string, error) {
	on := opts.Supervise || os.Getpid() == 1
	if v := os.Getenv(SuperviseEnv); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return "", fmt.Errorf("graceful: %s=%q: want 1 (supervise) or 0 (do not)", SuperviseEnv, v)
		}
		on = b
	}
	// PID 1 is never a supervisor's child, whatever its environment says.
	if addr := os.Getenv(envSupervisor); addr != "" && os.Getpid() != 1 {
		return addr, nil
	}
	if !on {
		return "", nil
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return "", runSupervisor(opts, log.With(slog.String("handoff", opts.Path)))
}

// reportServing tells this generation's supervisor, if it has one, that
// pid serves from now on: this process, from Ready, before it serves the
// handoff socket (so before a successor of its own can say so); its
// successor, from the predecessor's side of a takeover, before Exit
// closes (so before this process can end, and before Upgrade's verdict).
func (p *Process) reportServing(pid int) {
	if p.supervisor == "" {
		return
	}
	if err := sendServing(p.supervisor, pid, p.opts.Path); err != nil {
		p.log.Error("graceful: could not tell the supervisor which process serves",
			slog.Int("serving", pid), slog.Any("error", err))
	}
}
