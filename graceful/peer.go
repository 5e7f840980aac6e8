package graceful

import (
	"errors"
	"fmt"
	"os"
)

// Role says which side of a handoff a peer plays.
type Role uint8

// Roles.
const (
	// RoleSuccessor: the peer asks for this process's descriptors.
	RoleSuccessor Role = 1
	// RolePredecessor: the peer offers its descriptors to this process.
	RolePredecessor Role = 2
	// RoleRequester: the peer asks this process to upgrade
	// (RequestUpgrade).
	RoleRequester Role = 3
)

var roleNames = [...]string{RoleSuccessor: "successor", RolePredecessor: "predecessor", RoleRequester: "requester"}

func (r Role) String() string {
	if int(r) < len(roleNames) && roleNames[r] != "" {
		return roleNames[r]
	}
	return fmt.Sprintf("role(%d)", r)
}

// Peer is the process at the other end of the handoff socket (SO_PEERCRED;
// for a predecessor, the one that created the handoff listener).
type Peer struct {
	PID      int
	UID, GID uint32
	Role     Role
}

// authorize checks peer with Options.Authorize, or else that it runs with
// this process's uid.
func (p *Process) authorize(peer Peer) error {
	if p.opts.Authorize != nil {
		if err := p.opts.Authorize(peer); err != nil {
			if errors.Is(err, ErrUnauthorized) {
				return err
			}
			return fmt.Errorf("%w: %s pid %d uid %d: %w", ErrUnauthorized, peer.Role, peer.PID, peer.UID, err)
		}
		return nil
	}
	if uid := uint32(os.Getuid()); peer.UID != uid {
		return fmt.Errorf("%w: %s pid %d runs as uid %d, not %d", ErrUnauthorized, peer.Role, peer.PID, peer.UID, uid)
	}
	return nil
}
