package graceful

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/fdpass/fdpass/kinds"
)

// roleNamed marks, in an OFFER, a descriptor handed over under a name of
// the application's choosing (Process.File).
const roleNamed = "named"

// File returns the descriptor the predecessor handed over under name, as
// an *os.File, or, when it handed over none, the file create returns. It
// passes what has no address to match by: a memfd holding state, an
// eventfd, one end of a pipe. Like every inherited descriptor, the file
// shares its open file description (offset, status flags) with the
// predecessor's copy. The file is the caller's; the Process keeps a
// duplicate for the successor.
func (p *Process) File(name string, create func() (*os.File, error)) (*os.File, error) {
	if name == "" {
		return nil, fmt.Errorf("graceful: File: empty name")
	}
	f, ok, err := p.takeNamed(name)
	if err != nil {
		return nil, err
	}
	var file *os.File
	if ok {
		file = kinds.ToFile(f, name)
	} else if file, err = create(); err != nil {
		return nil, err
	}
	p.register(file, roleNamed, "", name, "")
	p.log.Debug("graceful: file", slog.String("name", name), slog.Bool("inherited", ok))
	return file, nil
}

// takeNamed takes the descriptor handed over under name, of any kind.
func (p *Process) takeNamed(name string) (int, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return -1, false, os.ErrClosed
	}
	if p.in == nil {
		return -1, false, nil
	}
	k := matchKey{role: roleNamed, addr: name}
	idx := p.avail[k]
	if len(idx) == 0 {
		return -1, false, nil
	}
	p.avail[k] = idx[1:]
	f, err := p.in.TakeFDAt(idx[0])
	return f, err == nil, err
}
