package lakebasetest

import (
	"strconv"
	"time"
)

// defaultWakeDelay is how long a wake-up takes unless SetWakeDelay says
// otherwise ("a few hundred milliseconds" in the Lakebase docs).
const defaultWakeDelay = 300 * time.Millisecond

// FrontDoorPort is the endpoint's port as a client of the real service
// meets it: a loopback TCP forwarder to PostgreSQL (on Host) that emulates
// scale to zero (Suspend, SetAutoSuspend, SetWakeDelay, SetWakeMode). TLS
// and the token check are PostgreSQL's own, end to end. AppEnv points
// PGPORT here; Port stays the direct, never-suspended port.
func (e *Emulator) FrontDoorPort() int { return e.front.srv.port() }

// Suspend scales the compute to zero: open connections through the front
// door are closed, and the next connection starts a wake-up that takes the
// wake delay; connections arriving before it ends are refused (see
// WakeMode). Connections to Port and to the pooler are not affected.
func (e *Emulator) Suspend() { e.front.suspend() }

// Resume wakes the compute immediately (no refusals), without counting a
// wake-up.
func (e *Emulator) Resume() { e.front.resume() }

// Suspended reports whether the compute is suspended or still waking.
func (e *Emulator) Suspended() bool { return e.front.isSuspended() }

// SetWakeDelay sets how long a wake-up takes (default 300 ms; 0 wakes on
// the first connection, which is then forwarded). It applies to wake-ups
// started afterwards.
func (e *Emulator) SetWakeDelay(d time.Duration) {
	e.front.mu.Lock()
	defer e.front.mu.Unlock()
	e.front.delay = max(d, 0)
}

// SetWakeMode sets how connections are refused while waking (default
// WakeRefuse).
func (e *Emulator) SetWakeMode(m WakeMode) {
	e.front.mu.Lock()
	defer e.front.mu.Unlock()
	e.front.mode = m
}

// SetAutoSuspend suspends the compute after idle without activity through
// the front door (no new connection and no byte on an open one), as
// Lakebase does after its inactivity timeout; open idle connections are
// closed then. 0 turns it off (the default).
func (e *Emulator) SetAutoSuspend(idle time.Duration) { e.front.setAutoSuspend(idle) }

// WakeUps counts the wake-ups started by a connection to a suspended
// compute.
func (e *Emulator) WakeUps() int64 { return e.front.wakeUps.Load() }

// RefusedWhileWaking counts the connections refused because the compute
// was waking up.
func (e *Emulator) RefusedWhileWaking() int64 { return e.front.refused.Load() }

// PoolerHost is the host of the endpoint's built-in connection pooler (the
// "-pooler" host of the real service): 127.0.0.2, a loopback address of
// its own on Linux, so it differs from Host as on the real service (the
// server certificate covers it). The pooler accepts the admin's native
// password (AdminConnString with PoolerHost/PoolerPort) and refuses token
// logins as PgBouncer does: FATAL 08P01 "SASL authentication failed".
// The endpoint's GET response reports it as status.hosts.
// read_write_pooled_host.
func (e *Emulator) PoolerHost() string { return e.pool.host }

// PoolerPort is the pooler's port: FrontDoorPort when that port was free
// on PoolerHost (as on the real service, where both use 5432), else
// another one.
func (e *Emulator) PoolerPort() int { return e.pool.srv.port() }

// PoolerRefusals counts the token (non-native) logins the pooler refused.
func (e *Emulator) PoolerRefusals() int64 { return e.pool.refusals.Load() }

// ServicePrincipalSecret is the OAuth client secret of the service
// principal (its client id is ServicePrincipal), for the M2M login path.
func (e *Emulator) ServicePrincipalSecret() string { return e.spSecret }

// AppName is the PGAPPNAME AppEnv hands out.
const AppName = "lakebasetest-app"

// AppEnv returns exactly what a Databricks App with this database as a
// resource is given — DATABRICKS_HOST, DATABRICKS_CLIENT_ID and
// DATABRICKS_CLIENT_SECRET (so the SDK's default auth runs OAuth M2M
// against the fake API; there is no PAT), PGHOST, PGPORT (the front door,
// so scale to zero applies), PGDATABASE, PGUSER (the service principal's
// client id, which is its Postgres role), PGSSLMODE (require, as Apps set
// it) and PGAPPNAME — plus the two variables an emulator needs on top:
// PGSSLROOTCERT (the emulator's CA is not publicly trusted) and
// LAKEBASE_ENDPOINT (real Apps map the endpoint themselves, with valueFrom
// in app.yaml).
func (e *Emulator) AppEnv() map[string]string {
	return map[string]string{
		"DATABRICKS_HOST":          e.http.URL,
		"DATABRICKS_CLIENT_ID":     servicePrincipal,
		"DATABRICKS_CLIENT_SECRET": e.spSecret,
		"PGHOST":                   e.Host(),
		"PGPORT":                   strconv.Itoa(e.FrontDoorPort()),
		"PGDATABASE":               databaseName,
		"PGUSER":                   servicePrincipal,
		"PGSSLMODE":                "require",
		"PGAPPNAME":                AppName,
		"PGSSLROOTCERT":            e.caFile,
		"LAKEBASE_ENDPOINT":        endpointName,
	}
}
