//go:build linux

package graceful_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fdpass/fdpass/graceful"
)

// The "httpgen" role is one generation of an HTTP service in its own
// process, as an application would write it with HTTPServer: HTTP/1 and
// cleartext HTTP/2 on one listener (or HTTPS, with HTTP/2 over ALPN), and
// after Exit, Drain. It says on standard output:
//
//	ready gen=N pid=P addr=A
//	exiting gen=N            (Exit closed: a successor took over)
//	drained gen=N took=D     (Drain returned)
//	exit gen=N
//
// Its handlers: / answers "gen=N"; /served how many / served;
// /slow?ms=M says slow-start, then answers after M ms (with exit=1, M ms
// after Exit);
// /echo answers the length and SHA-256 of the request body; /ws is a
// WebSocket echo (websocket_test.go).
const (
	envHTTPQuiesce = "GT_HTTP_QUIESCE" // Options.QuiesceTimeout
	envHTTPTLS     = "GT_HTTP_TLS"     // directory with cert.pem and key.pem: serve HTTPS
	envHTTPDrain   = "GT_HTTP_DRAIN"   // Drain's deadline
	envHTTPMaxMig  = "GT_HTTP_MAXMIG"  // Options.MaxMigrated, if set
	envHTTPNoLate  = "GT_HTTP_NOLATE"  // if set, Options.Migrated refuses all but the first batch it sees (LATE ones)
)

var _ = registerRestartRole("httpgen", roleHTTPGen)

// canceled answers 500 if the request's context has ended, which must
// not happen to a request whose client waits for it: net/http cancels it
// when a read of the connection fails other than by its own abort (a
// migrated connection whose timeouts were no net.Error did so).
func canceled(w http.ResponseWriter, r *http.Request) bool {
	if err := r.Context().Err(); err != nil {
		http.Error(w, "request context: "+err.Error(), http.StatusInternalServerError)
		return true
	}
	return false
}

func roleHTTPGen() error {
	quiesce, err := time.ParseDuration(os.Getenv(envHTTPQuiesce))
	if err != nil {
		return err
	}
	drain, err := time.ParseDuration(os.Getenv(envHTTPDrain))
	if err != nil {
		return err
	}
	maxMig, _ := strconv.Atoi(os.Getenv(envHTTPMaxMig))
	var migrated func([]*graceful.Conn) error
	if os.Getenv(envHTTPNoLate) != "" {
		var seen atomic.Bool
		migrated = func([]*graceful.Conn) error {
			if seen.Swap(true) {
				return errors.New("no connections after the migration's first phase")
			}
			return nil
		}
	}
	p, err := graceful.New(graceful.Options{Path: os.Getenv(envPath), Migrate: true, QuiesceTimeout: quiesce, MaxMigrated: maxMig, Migrated: migrated, Logger: childLogger()})
	if err != nil {
		return err
	}
	defer p.Close()
	ln, err := p.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	gen := p.Generation()
	mux := http.NewServeMux()
	var count atomic.Int64
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if canceled(w, r) {
			return
		}
		count.Add(1)
		w.Header().Set("X-Gen", strconv.FormatUint(gen, 10))
		fmt.Fprintf(w, "gen=%d", gen)
	})
	mux.HandleFunc("/served", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "gen=%d served=%d", gen, count.Load())
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		say("slow-start gen=%d", gen)
		if r.URL.Query().Get("exit") != "" {
			// In hand until after the takeover.
			<-p.Exit()
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
		}
		if canceled(w, r) {
			return
		}
		w.Header().Set("X-Gen", strconv.FormatUint(gen, 10))
		fmt.Fprintf(w, "gen=%d slept=%d", gen, ms)
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if canceled(w, r) {
			return
		}
		w.Header().Set("X-Gen", strconv.FormatUint(gen, 10))
		fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
	})
	mux.Handle("/ws", wsEcho(p, gen))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if dir := os.Getenv(envHTTPTLS); dir != "" {
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
		if err != nil {
			return err
		}
		// HTTPS: a tls.NewListener with both protocols.
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
	} else {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	hs := p.HTTP(srv)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	if err := p.Ready(); err != nil {
		return err
	}
	say("ready gen=%d pid=%d addr=%s", gen, os.Getpid(), ln.Addr())
	select {
	case <-p.Exit():
	case err := <-served:
		return fmt.Errorf("Serve: %w", err)
	}
	say("exiting gen=%d", gen)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := hs.Drain(ctx); err != nil {
		return fmt.Errorf("Drain: %w", err)
	}
	say("drained gen=%d took=%s", gen, time.Since(start))
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("Serve: %w", err)
	}
	say("exit gen=%d", gen)
	return nil
}

// httpGenEnv is the environment of an "httpgen" child.
func httpGenEnv(dir string, quiesce time.Duration, extra ...string) []string {
	return append([]string{
		envPath + "=" + filepath.Join(dir, "handoff.sock"),
		envHTTPQuiesce + "=" + quiesce.String(),
		envHTTPDrain + "=20s",
	}, extra...)
}

// httpGens runs generations of the "httpgen" role one after another.
type httpGens struct {
	t       testing.TB
	env     []string
	current *restartChild
	gen     int
	addr    string
}

func startHTTPGens(t testing.TB, env []string) *httpGens {
	t.Helper()
	g := &httpGens{t: t, env: env}
	g.current = startRestartChild(t, "", "httpgen", nil, env...)
	g.addr = field(g.current.expect("ready gen=1 "), "addr")
	g.gen = 1
	return g
}

// takeover starts the next generation and waits until it is ready and the
// previous one has exited; it returns the previous one's output lines from
// "exiting" on, and how long the successor took from its start to ready.
func (g *httpGens) takeover() (prev *restartChild, ready time.Duration) {
	g.t.Helper()
	start := time.Now()
	next := startRestartChild(g.t, "", "httpgen", nil, g.env...)
	line := next.expect(fmt.Sprintf("ready gen=%d ", g.gen+1))
	ready = time.Since(start)
	if a := field(line, "addr"); a != g.addr {
		g.t.Fatalf("generation %d listens on %s, not %s", g.gen+1, a, g.addr)
	}
	prev, g.current = g.current, next
	g.gen++
	return prev, ready
}

// until returns the lines the child said up to the first that contains
// s, included.
func (c *restartChild) until(s string) []string {
	c.t.Helper()
	line := c.c.Expect(s)
	out := c.c.Output()
	return out[:slices.Index(out, line)+1]
}

// rest returns every line the child said, once it has ended.
func (c *restartChild) rest() []string {
	c.t.Helper()
	c.wait()
	return c.c.Output()
}

// selfSigned writes a certificate for 127.0.0.1 and its key to dir and
// returns a pool that trusts it.
func selfSigned(t testing.TB, dir string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "fdpass test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}
