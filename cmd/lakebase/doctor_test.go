package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lakebase-go/lakebase/lakebasetest"
)

// doctorLine finds the report line of a stage.
func doctorLine(out, stage string) string {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		rest := strings.TrimLeft(strings.TrimSpace(l)[len(f[0]):], " ")
		if strings.TrimSpace(rest[:min(22, len(rest))]) == stage { // names are padded to 22
			return l
		}
	}
	return ""
}

// otherCA writes a CA certificate that did not sign the emulator's.
func otherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "some other CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDoctor runs the doctor against a healthy emulator and against each
// failure the emulator can produce: the failing stage and its fix are
// named, the stages before it passed, none after it ran.
func TestDoctor(t *testing.T) {
	e := lakebasetest.Start(t)
	stages := []string{"settings", "workspace", "workspace credentials", "identity", "host", "database credential", "dns", "tcp (with wake-up)", "tls", "login", "query"}

	t.Run("healthy", func(t *testing.T) {
		env := e.Env()
		delete(env, "PGHOST") // looked up from the endpoint
		delete(env, "PGUSER") // the workspace identity
		setEnv(t, env)
		code, out, errOut := lakebase(t, "doctor")
		if code != 0 || !strings.Contains(out, "all stages passed") {
			t.Fatalf("doctor: %d\n%s\n%s", code, out, errOut)
		}
		for _, st := range stages {
			if l := doctorLine(out, st); !strings.HasPrefix(strings.TrimSpace(l), "ok ") && !strings.HasPrefix(strings.TrimSpace(l), "skip ") {
				t.Errorf("stage %s: %q", st, l)
			}
		}
		for _, want := range []string{"endpoint=" + e.Endpoint() + " (LAKEBASE_ENDPOINT)", "accepted for " + e.ServicePrincipal(), "localhost (from endpoint", "name localhost verified", "SELECT current_user = " + e.ServicePrincipal()} {
			if !strings.Contains(out, want) {
				t.Errorf("doctor output lacks %q:\n%s", want, out)
			}
		}
		noToken(t, "doctor output", out+errOut)
	})

	t.Run("healthy with --profile", func(t *testing.T) {
		cfgFile := filepath.Join(t.TempDir(), "databrickscfg")
		if err := os.WriteFile(cfgFile, []byte("[emu]\nhost = "+e.WorkspaceURL()+"\ntoken = "+e.ServicePrincipalToken()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		env := e.Env()
		delete(env, "DATABRICKS_HOST")
		delete(env, "DATABRICKS_TOKEN")
		setEnv(t, env)
		t.Setenv("DATABRICKS_CONFIG_FILE", cfgFile)
		code, out, errOut := lakebase(t, "doctor", "--profile", "emu")
		if code != 0 || !strings.Contains(out, "workspace=profile emu (flag)") {
			t.Fatalf("doctor --profile: %d\n%s\n%s", code, out, errOut)
		}
	})

	const missing = "norole@example.com"
	bearer := e.AddIdentityWithoutRole(missing)
	for _, tc := range []struct {
		name  string
		edit  func(env map[string]string)
		prep  func()
		stage string
		want  []string // in the error or the fix
	}{
		{"refusing workspace", func(env map[string]string) { env["DATABRICKS_HOST"] = lakebasetest.RefusingWorkspaceURL(t) }, nil,
			"workspace", []string{"cannot be reached", "fix:   check DATABRICKS_HOST"}},
		{"bad credentials", func(env map[string]string) { env["DATABRICKS_TOKEN"] = "dapi-not-a-real-token-0000" }, nil,
			"workspace credentials", []string{"refused the credentials", "fix:   check DATABRICKS_TOKEN"}},
		{"role not the identity", func(env map[string]string) { env["PGUSER"] = "alice@example.com" }, nil,
			"identity", []string{`"alice@example.com" (PGUSER) is not the workspace identity`, "fix:   unset PGUSER"}},
		{"unknown endpoint", func(env map[string]string) {
			env["LAKEBASE_ENDPOINT"] = "projects/nope/branches/main/endpoints/primary"
			delete(env, "PGHOST")
		}, nil, "host", []string{"does not exist in this workspace", "fix:   check the name"}},
		{"missing role", func(env map[string]string) { env["DATABRICKS_TOKEN"] = bearer; delete(env, "PGUSER") }, nil,
			"login", []string{`role "` + missing + `" does not exist`, "fix:   create it as the project owner with `SELECT databricks_create_role("}},
		{"untrusted certificate", func(env map[string]string) { env["PGSSLROOTCERT"] = otherCA(t) }, nil,
			"tls", []string{"not signed by a trusted CA", "fix:   set PGSSLROOTCERT"}},
		{"TLS-only server with sslmode=disable", func(env map[string]string) { env["PGSSLMODE"] = "disable" }, nil,
			"login", []string{"no access rule for this connection", "fix:   connect with TLS"}},
		{"suspended endpoint past its timeout", func(env map[string]string) {
			env["PGPORT"] = strconv.Itoa(e.FrontDoorPort())
			env["PGCONNECT_TIMEOUT"] = "1"
		}, func() { e.SetWakeDelay(time.Hour); e.Suspend() },
			"tcp (with wake-up)", []string{"did not accept a connection within 1s", "fix:   retry in a moment; raise PGCONNECT_TIMEOUT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := e.Env()
			tc.edit(env)
			setEnv(t, env)
			if tc.prep != nil {
				tc.prep()
				defer func() { e.Resume(); e.SetWakeDelay(300 * time.Millisecond) }()
			}
			code, out, errOut := lakebase(t, "doctor")
			if code != 1 {
				t.Fatalf("doctor: exit %d, want 1\n%s\n%s", code, out, errOut)
			}
			l := doctorLine(out, tc.stage)
			if !strings.HasPrefix(strings.TrimSpace(l), "FAIL") {
				t.Errorf("stage %s: %q, want FAIL\n%s", tc.stage, l, out)
			}
			if strings.Count(out, "fix:") != 1 {
				t.Errorf("the fix is not printed exactly once:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			seen := false
			for _, st := range stages {
				l := doctorLine(out, st)
				switch {
				case st == tc.stage:
					seen = true
				case !seen && !strings.HasPrefix(strings.TrimSpace(l), "ok") && !strings.HasPrefix(strings.TrimSpace(l), "skip"):
					t.Errorf("stage %s before the failure: %q", st, l)
				case seen && l != "":
					t.Errorf("stage %s ran after the failure: %q", st, l)
				}
			}
			noToken(t, "doctor output", out+errOut)
		})
	}
}
