package tokensource

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/databricks/databricks-sdk-go/common/types/duration"
	"github.com/databricks/databricks-sdk-go/service/database"
	"github.com/databricks/databricks-sdk-go/service/postgres"
	"golang.org/x/oauth2"
)

type static struct{ tok Token }

func (s static) Token(context.Context) (Token, error) { return s.tok, nil }

// Static returns a Source that always returns value (for example a native
// Postgres password). A zero expiry means it never expires.
func Static(value string, expiry time.Time) Source {
	return static{Token{Value: value, Expiry: expiry}}
}

type fromOAuth2 struct{ ts oauth2.TokenSource }

func (f fromOAuth2) Token(ctx context.Context) (Token, error) {
	if err := ctx.Err(); err != nil {
		return Token{}, err
	}
	t, err := f.ts.Token()
	if err != nil {
		return Token{}, fmt.Errorf("tokensource: oauth2 source: %w", err)
	}
	return Token{Value: t.AccessToken, Expiry: t.Expiry}, nil
}

// FromOAuth2 adapts an oauth2.TokenSource: AccessToken becomes the value.
// oauth2 sources take no context, so ctx is only checked before the call.
func FromOAuth2(ts oauth2.TokenSource) Source { return fromOAuth2{ts} }

type toOAuth2 struct {
	ctx context.Context
	src Source
}

func (t toOAuth2) Token() (*oauth2.Token, error) {
	tok, err := t.src.Token(t.ctx)
	if err != nil {
		return nil, err
	}
	return &oauth2.Token{AccessToken: tok.Value, TokenType: "Bearer", Expiry: tok.Expiry}, nil
}

// ToOAuth2 adapts src to an oauth2.TokenSource whose calls use ctx.
func ToOAuth2(ctx context.Context, src Source) oauth2.TokenSource { return toOAuth2{ctx, src} }

// EndpointOptions tune credentials minted for an autoscaling endpoint.
type EndpointOptions struct {
	// TTL asks for tokens of this lifetime (5 min to 1 h). Zero: the
	// service default (1 h).
	TTL time.Duration
	// ReadOnlyTables scopes the token to read-only Unity Catalog claims on
	// these tables (full names, catalog.schema.table): one RequestedClaims
	// with the READ_ONLY permission set. The API has no blanket read-only
	// flag; the permission set always applies to listed resources.
	ReadOnlyTables []string
	// Claims are passed through as-is (in addition to ReadOnlyTables).
	Claims []postgres.RequestedClaims
}

// EndpointAPI is the call EndpointFetcher makes: the SDK's
// postgres.PostgresInterface has it — w.Postgres of a
// *databricks.WorkspaceClient, or postgres.NewPostgres of a client from the
// SDK's client package (which links only that service, not the SDK's
// hundred others).
type EndpointAPI interface {
	GenerateDatabaseCredential(ctx context.Context, request postgres.GenerateDatabaseCredentialRequest) (*postgres.DatabaseCredential, error)
}

// InstanceAPI is the call InstanceFetcher makes: the SDK's
// database.DatabaseInterface has it (w.Database, or database.NewDatabase of
// an SDK client).
type InstanceAPI interface {
	GenerateDatabaseCredential(ctx context.Context, request database.GenerateDatabaseCredentialRequest) (*database.DatabaseCredential, error)
}

// EndpointFetcher mints credentials for an autoscaling endpoint
// ("projects/{p}/branches/{b}/endpoints/{e}") with
// api.GenerateDatabaseCredential; pass w.Postgres of a workspace client.
func EndpointFetcher(api EndpointAPI, endpoint string, opts EndpointOptions) (FetchFunc, error) {
	if isNil(api) {
		return nil, &ConfigError{Setting: "workspace client", Problem: "nil", Fix: "pass the SDK's postgres service (w.Postgres of a workspace client)"}
	}
	if strings.TrimSpace(endpoint) == "" {
		return nil, &ConfigError{Setting: "endpoint", Problem: "empty", Fix: `use "projects/{project}/branches/{branch}/endpoints/{endpoint}"`}
	}
	if opts.TTL != 0 && (opts.TTL < 5*time.Minute || opts.TTL > time.Hour) {
		return nil, &ConfigError{Setting: "TTL", Problem: fmt.Sprintf("%v is outside 5m..1h", opts.TTL), Fix: "use 5 minutes to 1 hour, or zero for the default"}
	}
	req := postgres.GenerateDatabaseCredentialRequest{Endpoint: endpoint, Claims: opts.Claims}
	if opts.TTL != 0 {
		req.Ttl = duration.New(opts.TTL)
	}
	if len(opts.ReadOnlyTables) > 0 {
		claim := postgres.RequestedClaims{PermissionSet: postgres.RequestedClaimsPermissionSetReadOnly}
		for _, t := range opts.ReadOnlyTables {
			if strings.TrimSpace(t) == "" {
				return nil, &ConfigError{Setting: "ReadOnlyTables", Problem: "contains an empty table name", Fix: "list full Unity Catalog names (catalog.schema.table)"}
			}
			claim.Resources = append(claim.Resources, postgres.RequestedResource{TableName: t})
		}
		req.Claims = append(append([]postgres.RequestedClaims(nil), req.Claims...), claim)
	}
	return func(ctx context.Context) (Token, error) {
		cred, err := api.GenerateDatabaseCredential(ctx, req)
		if err != nil {
			return Token{}, scrubErr(err)
		}
		return parseEndpointCredential(cred)
	}, nil
}

func parseEndpointCredential(cred *postgres.DatabaseCredential) (Token, error) {
	if cred == nil || cred.Token == "" {
		return Token{}, &ValidationError{Field: "token", Reason: "is empty"}
	}
	if cred.ExpireTime == nil || cred.ExpireTime.AsTime().IsZero() {
		return Token{}, &ValidationError{Field: "expire_time", Reason: "is missing"}
	}
	return Token{Value: cred.Token, Expiry: cred.ExpireTime.AsTime()}, nil
}

// InstanceFetcher mints credentials for a provisioned database instance
// with api.GenerateDatabaseCredential (pass w.Database of a workspace
// client), parsing its RFC 3339 expiration_time.
func InstanceFetcher(api InstanceAPI, instance string) (FetchFunc, error) {
	if isNil(api) {
		return nil, &ConfigError{Setting: "workspace client", Problem: "nil", Fix: "pass the SDK's database service (w.Database of a workspace client)"}
	}
	if strings.TrimSpace(instance) == "" {
		return nil, &ConfigError{Setting: "instance", Problem: "empty", Fix: "use the database instance name"}
	}
	return func(ctx context.Context) (Token, error) {
		cred, err := api.GenerateDatabaseCredential(ctx, database.GenerateDatabaseCredentialRequest{InstanceNames: []string{instance}})
		if err != nil {
			return Token{}, scrubErr(err)
		}
		return parseInstanceCredential(cred)
	}, nil
}

func parseInstanceCredential(cred *database.DatabaseCredential) (Token, error) {
	if cred == nil || cred.Token == "" {
		return Token{}, &ValidationError{Field: "token", Reason: "is empty"}
	}
	if cred.ExpirationTime == "" {
		return Token{}, &ValidationError{Field: "expiration_time", Reason: "is missing"}
	}
	exp, err := time.Parse(time.RFC3339Nano, cred.ExpirationTime)
	if err != nil {
		var pe *time.ParseError
		if errors.As(err, &pe) {
			return Token{}, &ValidationError{Field: "expiration_time", Reason: "is not an RFC 3339 time"}
		}
		return Token{}, &ValidationError{Field: "expiration_time", Reason: "cannot be parsed"}
	}
	return Token{Value: cred.Token, Expiry: exp}, nil
}

// isNil reports whether an interface holds nothing or a nil pointer.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}
