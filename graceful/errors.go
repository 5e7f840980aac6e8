package graceful

import (
	"errors"
	"fmt"

	"github.com/fdpass/fdpass/internal/handoffmsg"
)

// Errors of the restart API. Errors this package returns wrap one of these
// where one applies; match them with errors.Is.
var (
	// ErrUnsupported is returned by the restart API where it is not
	// available (it needs Linux). It matches errors.ErrUnsupported.
	ErrUnsupported = fmt.Errorf("graceful: restart API not supported on this platform: %w", errors.ErrUnsupported)

	// ErrAlreadyRunning: a live process holds the handoff socket and did not
	// hand off (it does not speak the protocol, or the socket is of another
	// type).
	ErrAlreadyRunning = errors.New("graceful: another instance is running and did not hand off")
	// ErrNotSocket: the handoff path exists and is not a socket; it is left
	// alone.
	ErrNotSocket = errors.New("graceful: handoff path exists and is not a socket")
	// ErrHandoff: the handoff failed; the predecessor keeps serving.
	ErrHandoff = errors.New("graceful: handoff failed")
	// ErrReady: Ready was already called.
	ErrReady = errors.New("graceful: Ready already called")
	// ErrNotReady: MigratedConns was called before Ready returned nil.
	ErrNotReady = errors.New("graceful: Ready has not returned; migrated connections arrive in it")
	// ErrNoMigration: this process set Options.Migrate and its
	// predecessor did not, so no connection migrated.
	ErrNoMigration = errors.New("graceful: the predecessor does not migrate connections (no Options.Migrate there)")
	// ErrNetwork: Listen or ListenPacket was given a network it does not
	// handle.
	ErrNetwork = errors.New("graceful: unsupported network")

	// The peer's failures, as the handoff exchange found them (the peer
	// may have said so in an ERROR message, which also matches
	// ErrRefused).

	// ErrRefused: the peer answered with an ERROR message; the error says
	// why, and matches the sentinel for the peer's reason where there is
	// one (ErrUnauthorized, ErrVersion, ErrMalformed, ErrTimeout).
	ErrRefused = handoffmsg.ErrRefused
	// ErrUnauthorized: the peer's credentials failed the check (by
	// default: another uid). A successor refused by its predecessor gets
	// an error matching both ErrRefused and ErrUnauthorized.
	ErrUnauthorized = handoffmsg.ErrUnauthorized
	// ErrVersion: the peer speaks a version of the handoff protocol this
	// one does not.
	ErrVersion = handoffmsg.ErrVersion
	// ErrMalformed: a handoff message does not follow the format, or the
	// peer sent a message out of turn.
	ErrMalformed = handoffmsg.ErrMalformed
	// ErrTimeout: the handoff did not finish within Options.Timeout.
	ErrTimeout = handoffmsg.ErrTimeout
	// ErrUpgrade: Upgrade, or the upgrade RequestUpgrade asked for,
	// failed; the running process serves on. The error says why.
	ErrUpgrade = handoffmsg.ErrUpgrade
	// ErrUpgrading: an upgrade is in progress already.
	ErrUpgrading = handoffmsg.ErrUpgrading
)
