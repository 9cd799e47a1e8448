package lakebasetest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// ErrPostgresNotFound is wrapped by the error New returns when the
// PostgreSQL server binaries (initdb, pg_ctl, postgres) cannot be found.
var ErrPostgresNotFound = errors.New("lakebasetest: PostgreSQL server binaries not found")

// installHint is appended to ErrPostgresNotFound.
const installHint = `install the Debian/Ubuntu package "postgresql" (sudo apt-get install -y postgresql), or put initdb and pg_ctl on PATH`

// findBinDir locates the directory holding initdb, pg_ctl and postgres:
// PATH, then pg_config --bindir, then the newest /usr/lib/postgresql/*/bin.
func findBinDir() (string, error) {
	ok := func(dir string) bool {
		for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	var candidates []string
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			candidates = append(candidates, filepath.Dir(real))
		}
		candidates = append(candidates, filepath.Dir(p))
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersionOf(dirs[i]) > pgVersionOf(dirs[j]) })
	candidates = append(candidates, dirs...)
	for _, d := range candidates {
		if ok(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("%w: %s", ErrPostgresNotFound, installHint)
}

func pgVersionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// osUser is who runs the server: the "postgres" OS user when we are root
// (initdb and postgres refuse to run as root), else ourselves.
type osUser struct {
	asPostgres bool
	uid, gid   int
}

func serverUser() (osUser, error) {
	if os.Geteuid() != 0 {
		return osUser{uid: os.Geteuid(), gid: os.Getegid()}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return osUser{}, fmt.Errorf("lakebasetest: running as root needs the OS user \"postgres\" to run the server: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return osUser{asPostgres: true, uid: uid, gid: gid}, nil
}

// command builds a command run as the server user. PG* variables are not
// passed on: PostgreSQL reads some of them (PGPORT, PGDATA, ...), and a test
// that exported an emulator's AppEnv must not change the next cluster.
func (u osUser) command(name string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if u.asPostgres {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	} else {
		cmd = exec.Command(name, args...)
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	return cmd
}

// run runs a command as the server user and returns its combined output in
// the error.
func (u osUser) run(name string, args ...string) error {
	cmd := u.command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("lakebasetest: %s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// chown gives path (recursively) to the server user.
func (u osUser) chown(path string) error {
	if !u.asPostgres {
		return nil
	}
	return filepath.Walk(path, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, u.uid, u.gid)
	})
}

var templateMu sync.Mutex

// template returns a data directory initialised once per machine, PostgreSQL
// version and server user, which emulators copy instead of running initdb
// (the slow part of starting a cluster).
func template(bin string, u osUser) (string, error) {
	templateMu.Lock()
	defer templateMu.Unlock()
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("lakebasetest-template-v2-%d-%d", pgVersionOf(bin), u.uid))
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err == nil {
		return dir, nil
	}
	build, err := os.MkdirTemp("", "lakebasetest-template-build-*")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(build)
	if err := u.chown(build); err != nil {
		return "", err
	}
	data := filepath.Join(build, "data")
	if err := u.run(filepath.Join(bin, "initdb"), "-D", data, "-U", adminRole, "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		return "", err
	}
	if err := os.Rename(data, dir); err != nil {
		if _, statErr := os.Stat(filepath.Join(dir, "PG_VERSION")); statErr == nil {
			return dir, nil // another process won the race
		}
		return "", fmt.Errorf("lakebasetest: install template cluster: %w", err)
	}
	return dir, nil
}

// copyDir copies the template data directory (cp -a keeps ownership and
// modes, which postgres checks).
func copyDir(src, dst string) error {
	out, err := exec.Command("cp", "-a", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("lakebasetest: copy template cluster: %w: %s", err, out)
	}
	return nil
}
