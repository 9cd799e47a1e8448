package lakebasetest

import "sync/atomic"

// claimRecord is one entry of a credential request's "claims" (the SDK's
// postgres.RequestedClaims).
type claimRecord struct {
	PermissionSet string `json:"permission_set"`
	Resources     []struct {
		TableName string `json:"table_name"`
	} `json:"resources"`
}

// claimLog records the claims credential requests asked for. The emulator
// does not enforce them (it has no Unity Catalog); tests check that they
// were asked for.
type claimLog struct {
	readOnly atomic.Int64
	last     atomic.Pointer[[]string]
}

func (a *api) recordClaims(claims []claimRecord) {
	for _, c := range claims {
		if c.PermissionSet != "READ_ONLY" {
			continue
		}
		a.claims.readOnly.Add(1)
		tables := make([]string, 0, len(c.Resources))
		for _, r := range c.Resources {
			tables = append(tables, r.TableName)
		}
		a.claims.last.Store(&tables)
	}
}

// ReadOnlyMints counts the autoscaling credential requests that carried a
// READ_ONLY permission-set claim (tokensource.EndpointOptions.ReadOnlyTables,
// connector.Config.ReadOnlyTables). Claims are recorded, not enforced.
func (e *Emulator) ReadOnlyMints() int64 { return e.api.claims.readOnly.Load() }

// LastReadOnlyTables returns the tables of the most recent READ_ONLY claim
// requested, or nil.
func (e *Emulator) LastReadOnlyTables() []string {
	if p := e.api.claims.last.Load(); p != nil {
		return append([]string(nil), (*p)...)
	}
	return nil
}
