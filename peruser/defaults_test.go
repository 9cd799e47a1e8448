package peruser_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/peruser"
)

// TestNegativeSettingsRefused: a negative count or duration that cannot
// mean off is a *connector.ConfigError naming the field, before anything
// is built or dialled.
func TestNegativeSettingsRefused(t *testing.T) {
	for name, cfg := range map[string]peruser.Config{
		"MaxUsers":            {MaxUsers: -1},
		"IdleTTL":             {IdleTTL: -time.Second},
		"MaxOpenConnsPerUser": {MaxOpenConnsPerUser: -1},
		"VerifiedTTL":         {VerifiedTTL: -time.Second},
		"MaxVerifiedTokens":   {MaxVerifiedTokens: -1},
		"VerifyTimeout":       {VerifyTimeout: -time.Second},
		"MaxFailedTokens":     {MaxFailedTokens: -1},
	} {
		m, err := peruser.New(t.Context(), cfg)
		if m != nil {
			_ = m.Close()
		}
		var ce *connector.ConfigError
		if !errors.As(err, &ce) || !strings.HasSuffix(ce.Setting, "."+name) {
			t.Errorf("%s negative: want a *connector.ConfigError naming it, got %v", name, err)
		}
	}
}
