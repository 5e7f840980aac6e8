//go:build !linux

package graceful

import "log/slog"

func runSupervisor(Options, *slog.Logger) error { return ErrUnsupported }

func sendServing(string, int, string) error { return ErrUnsupported }
