package graceful

import (
	"net"
	"time"

	"github.com/fdpass/fdpass/graceful/migrate"
	"github.com/fdpass/fdpass/internal/handoffmsg"
)

// Conn is an established connection that can migrate to the successor at
// a takeover; see package graceful/migrate for how its reader hands it
// over (Handoff, HandoffReader) and what its Read returns meanwhile.
type Conn = migrate.Conn

// ErrMigrating: a Conn's Read was interrupted because the connection is
// being migrated to the successor; call Conn.Handoff.
var ErrMigrating = migrate.ErrMigrating

// Track returns c wrapped in a Conn that migrates at a takeover (with
// Options.Migrate); read and write it instead of c. Closing the Conn
// closes c.
func (p *Process) Track(c net.Conn) *Conn { return p.mig.Track(c, nil) }

// MigratedConns returns the connections the predecessor handed over, each
// once (not those an HTTPServer serves). Serve each from its State; its
// first Reads return the bytes the predecessor had read but not processed.
// They arrive in Ready: before Ready has returned nil, MigratedConns
// returns ErrNotReady, and ErrNoMigration when this process set
// Options.Migrate and its predecessor did not.
func (p *Process) MigratedConns() ([]*Conn, error) {
	p.mu.Lock()
	started, err := p.started, p.noMigration
	p.mu.Unlock()
	if !started {
		return nil, ErrNotReady
	}
	if err != nil {
		return nil, err
	}
	return p.mig.Migrated(), nil
}

// checkMigrated checks what arrived in a migration before the successor
// acknowledges it: what this package knows of the connections, then
// Options.Migrated.
func (p *Process) checkMigrated(conns []*Conn) error {
	if err := checkHTTP(conns); err != nil {
		return err
	}
	if p.opts.Migrated != nil {
		return p.opts.Migrated(conns)
	}
	return nil
}

// features returns the feature bits this process supports.
func (p *Process) features() uint32 {
	if p.opts.Migrate {
		return handoffmsg.FeatureMigrate | handoffmsg.FeatureStreamConns | handoffmsg.FeatureLateConns | handoffmsg.FeatureCapacity
	}
	return 0
}

// quiesceTimeout is Options.QuiesceTimeout, or its default.
func (p *Process) quiesceTimeout() time.Duration {
	if p.opts.QuiesceTimeout > 0 {
		return p.opts.QuiesceTimeout
	}
	return min(defaultQuiesce, p.opts.Timeout/2)
}
