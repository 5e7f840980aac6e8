// Package flood opens many TCP connections to a server and holds them:
// what a careless client or a local attacker does to push a server to its
// descriptor limit (EMFILE), for the examples' tests.
package flood

import (
	"net"
	"sync"
	"time"
)

// Hold dials addr n times (each dial bounded by a second; what fails is
// skipped), keeps the connections open for d, then closes them. It
// returns how many it held.
func Hold(addr string, n int, d time.Duration) int {
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	work := make(chan struct{}, n)
	for range n {
		work <- struct{}{}
	}
	close(work)
	for range 32 {
		wg.Go(func() {
			for range work {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	time.Sleep(d)
	for _, c := range conns {
		c.Close()
	}
	return len(conns)
}
