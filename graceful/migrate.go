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

// Track registers c for migration and returns it wrapped in a Conn, which
// the application reads and writes instead of c. The Conn takes ownership
// of c: closing the Conn closes c. Tracking has effect only with
// Options.Migrate set; otherwise the Conn is c with a Read that returns
// what c's does.
func (p *Process) Track(c net.Conn) *Conn { return p.mig.Track(c, nil) }

// MigratedConns returns the connections the predecessor handed over, once
// Ready has returned, and each only once (those an HTTPServer serves
// excepted). They are tracked by this Process, so they move on at the next
// takeover. Serve each as the predecessor did: its State says where the
// session stands, and its first Reads return the bytes the predecessor had
// read but not processed.
//
// On Linux the net.Conn inside a migrated Conn is built on an *os.File
// (reads, writes and deadlines through the runtime poller, SyscallConn for
// socket options), not a *net.TCPConn: that costs a fifth of what
// net.FileConn does, which matters with thousands of connections.
func (p *Process) MigratedConns() []*Conn { return p.mig.Migrated() }

// features returns the feature bits this process supports.
func (p *Process) features() uint32 {
	if p.opts.Migrate {
		return handoffmsg.FeatureMigrate | handoffmsg.FeatureStreamConns
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
