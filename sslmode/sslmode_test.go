package sslmode

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/lakebase-go/lakebase/internal/leaktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, leaktest.Options()...) }

func TestParse(t *testing.T) {
	for in, want := range map[string]Mode{
		"": VerifyFull, "verify-full": VerifyFull, " Verify-CA ": VerifyCA, "require": Require,
		"PREFER": Prefer, "disable": Disable,
	} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"allow", "verify_full", "on", "true", "x"} {
		_, err := Parse(in)
		var e *Error
		if !errors.As(err, &e) || e.Setting != "sslmode" || !strings.Contains(err.Error(), Accepted) {
			t.Errorf("Parse(%q): want *Error listing %q, got %v", in, Accepted, err)
		}
	}
}

func TestConfigurePolicy(t *testing.T) {
	for _, tc := range []struct {
		mode, host string
		eff        Mode
		serverName string
	}{
		{"", "db.example.com", VerifyFull, "db.example.com"},
		{"require", "db.example.com", VerifyFull, "db.example.com"},
		{"verify-ca", "db.example.com", VerifyFull, "db.example.com"},
		{"prefer", "10.0.0.1", VerifyFull, "10.0.0.1"},
		{"verify-full", "[::1]", VerifyFull, "::1"},
		{"disable", "localhost", Disable, ""},
	} {
		res, err := Configure(Options{Mode: tc.mode, Host: tc.host})
		if err != nil {
			t.Fatalf("%q/%q: %v", tc.mode, tc.host, err)
		}
		if res.Effective != tc.eff {
			t.Errorf("%q: effective %q, want %q", tc.mode, res.Effective, tc.eff)
		}
		if tc.eff == Disable {
			if res.TLS != nil {
				t.Errorf("disable: TLS config %v, want nil", res.TLS)
			}
			continue
		}
		if res.TLS == nil || res.TLS.InsecureSkipVerify || res.TLS.ServerName != tc.serverName || res.TLS.MinVersion != tls.VersionTLS12 || res.TLS.RootCAs != nil {
			t.Errorf("%q/%q: bad TLS config %+v", tc.mode, tc.host, res.TLS)
		}
	}
}

func TestConfigureErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a cert"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		opts    Options
		setting string
	}{
		{Options{Mode: "allow", Host: "h"}, "sslmode"},
		{Options{Host: ""}, "host"},
		{Options{Host: "h", RootCert: filepath.Join(dir, "missing.pem")}, "sslrootcert"},
		{Options{Host: "h", RootCert: empty}, "sslrootcert"},
	} {
		_, err := Configure(tc.opts)
		var e *Error
		if !errors.As(err, &e) || !strings.HasPrefix(e.Setting, tc.setting) || e.Fix == "" {
			t.Errorf("%+v: want *Error for %s with a fix, got %v", tc.opts, tc.setting, err)
		}
	}
}

func TestDisableWarnsOnlyForRemoteHosts(t *testing.T) {
	for host, warn := range map[string]bool{"localhost": false, "127.0.0.1": false, "::1": false, "/tmp/sock": false, "db.example.com": true, "10.1.2.3": true} {
		var buf bytes.Buffer
		_, err := Configure(Options{Mode: "disable", Host: host, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(buf.String(), "TLS disabled"); got != warn {
			t.Errorf("host %q: warned=%v, want %v", host, got, warn)
		}
	}
}

func TestHomeIsNotRead(t *testing.T) {
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".postgresql"), 0o700); err != nil {
		t.Fatal(err)
	}
	ca, _, _ := newCA(t)
	if err := os.WriteFile(filepath.Join(home, ".postgresql", "root.crt"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
	res, err := Configure(Options{Host: "db.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if res.TLS.RootCAs != nil {
		t.Error("~/.postgresql/root.crt was read")
	}
}

// newCA returns a CA PEM and a function issuing server certificates.
func newCA(t *testing.T) ([]byte, *x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert, key
}

func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, notAfter time.Time, dns []string, ips []net.IP) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "server"}, NotBefore: time.Now().Add(-2 * time.Hour),
		NotAfter: notAfter, DNSNames: dns, IPAddresses: ips, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// handshake runs one TLS handshake against a local listener presenting
// cert and returns the client error and the SNI the server saw.
func handshake(t *testing.T, cert tls.Certificate, cfg *tls.Config) (string, error) {
	t.Helper()
	sni := make(chan string, 1)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) { sni <- h.ServerName; return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err == nil {
			_ = c.(*tls.Conn).Handshake()
			_ = c.Close()
		}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err == nil {
		_ = conn.Close()
	}
	<-done
	select {
	case s := <-sni:
		return s, err
	default:
		return "", err
	}
}

func TestHandshakes(t *testing.T) {
	caPEM, ca, caKey := newCA(t)
	otherPEM, _, _ := newCA(t)
	good := issue(t, ca, caKey, time.Now().Add(time.Hour), []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	expired := issue(t, ca, caKey, time.Now().Add(-time.Minute), []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	cfg := func(host string, pem []byte) *tls.Config {
		res, err := Configure(Options{Host: host, RootCertPEM: pem})
		if err != nil {
			t.Fatal(err)
		}
		return res.TLS
	}
	if sni, err := handshake(t, good, cfg("localhost", caPEM)); err != nil || sni != "localhost" {
		t.Errorf("DNS host with the right CA: err %v, SNI %q (want localhost)", err, sni)
	}
	if sni, err := handshake(t, good, cfg("127.0.0.1", caPEM)); err != nil || sni != "" {
		t.Errorf("IP host with the right CA: err %v, SNI %q (want none)", err, sni)
	}
	if _, err := handshake(t, good, cfg("localhost", otherPEM)); err == nil {
		t.Error("wrong CA accepted")
	}
	if _, err := handshake(t, good, cfg("db.example.com", caPEM)); err == nil {
		t.Error("wrong host name accepted")
	}
	if _, err := handshake(t, expired, cfg("localhost", caPEM)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired certificate: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "disable", "allow", "prefer", "require", "verify-ca", "verify-full", " VERIFY-FULL ", "x", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := Parse(s)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T", err)
			}
			return
		}
		switch m {
		case Disable, Prefer, Require, VerifyCA, VerifyFull:
		default:
			t.Fatalf("Parse(%q) = %q", s, m)
		}
	})
}

func FuzzConfigure(f *testing.F) {
	f.Add("require", "db.example.com")
	f.Add("disable", "")
	f.Add("", "[::1]")
	f.Fuzz(func(t *testing.T, mode, host string) {
		res, err := Configure(Options{Mode: mode, Host: host, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return
		}
		if res.Effective != Disable && (res.TLS == nil || res.TLS.InsecureSkipVerify) {
			t.Fatalf("mode %q gave an unverified configuration", mode)
		}
		if res.Effective == Disable && res.TLS != nil {
			t.Fatal("disable with a TLS config")
		}
	})
}

func ExampleConfigure() {
	res, err := Configure(Options{Mode: "require", Host: "instance.database.cloud.databricks.com"})
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Requested, "->", res.Effective, res.TLS.ServerName)
	// Output: require -> verify-full instance.database.cloud.databricks.com
}
