package sdkclient

import (
	"context"
	"errors"
	"net/http"

	"github.com/databricks/databricks-sdk-go/config"
	"github.com/databricks/databricks-sdk-go/config/credentials"
	"github.com/databricks/databricks-sdk-go/service/database"
	"github.com/databricks/databricks-sdk-go/service/iam"
	"github.com/databricks/databricks-sdk-go/service/postgres"
)

// UsersRateLimit is the client-side request rate limit of a Users client,
// shared by all its users: effectively none, as when every user had a
// client of its own (the SDK's default, 15 per second, is meant for one
// identity; the workspace answers over-eager callers with 429, which the
// SDK retries, and peruser caps verifications in flight).
const UsersRateLimit = 1 << 30

// Users is one workspace client shared by many end users: every request
// carries the bearer token of the user it is made for (For), so that a
// new user costs no client of its own — no configuration to resolve, no
// HTTP client, no rate limiter. Like PAT it reads nothing from the
// environment or profiles and makes no network call when built.
type Users struct {
	c *Client
}

// NewUsers returns a Users client for the workspace at host on transport
// rt (nil: one of the client's own).
func NewUsers(host string, rt http.RoundTripper) (*Users, error) {
	t := &boundTransport{base: rt, user: rt}
	if t.base == nil {
		t.base = newTransport()
	}
	c, err := newClient(&config.Config{
		Host:                 host,
		Credentials:          userBearer{},
		AuthType:             "pat",
		Loaders:              []config.Loader{noLoader{}},
		HostMetadataResolver: func(context.Context, string) (*config.HostMetadata, error) { return nil, nil },
		HTTPTransport:        t,
		RateLimitPerSecond:   UsersRateLimit,
	})
	if err != nil {
		return nil, err
	}
	c.t = t
	c.settings = copyConfig(c.Config)
	c.settings.HTTPTransport = rt
	return &Users{c: c}, nil
}

// For returns the client of the user whose access token is token. It is
// cheap (two small allocations) and holds nothing but the token. Its
// Bind, Cause and Close do nothing.
func (u *Users) For(token string) *Client {
	b := &bearer{u.c, token}
	return &Client{Config: u.c.Config, Postgres: userPostgres{b}, Database: userDatabase{b}, CurrentUser: userMe{b}, settings: u.c.settings}
}

// Close closes the idle connections of the shared transport.
func (u *Users) Close() { u.c.Close() }

type bearerKey struct{}

// errNoUserToken fails a request of a Users client made without For.
var errNoUserToken = errors.New("sdkclient: no user access token for this request")

// userBearer sets the Authorization header of each request from its
// context: the token For put there.
type userBearer struct{}

func (userBearer) Name() string { return "pat" }

func (userBearer) Configure(context.Context, *config.Config) (credentials.CredentialsProvider, error) {
	return credentials.CredentialsProviderFn(func(r *http.Request) error {
		b, _ := r.Context().Value(bearerKey{}).(*bearer)
		if b == nil || b.tok == "" {
			return errNoUserToken
		}
		tok := b.tok
		r.Header.Set("Authorization", "Bearer "+tok)
		return nil
	}), nil
}

type bearer struct {
	c   *Client
	tok string
}

// ctx carries b, not the bare token: a context prints its string values
// (fmt of a ctx, as some loggers do, would show the user's access token),
// while a *bearer prints as its type name.
func (b *bearer) ctx(ctx context.Context) context.Context {
	return context.WithValue(ctx, bearerKey{}, b)
}

// The services of one user (pointer-shaped, so storing them in the
// Client's interfaces allocates nothing).
type (
	userPostgres struct{ *bearer }
	userDatabase struct{ *bearer }
	userMe       struct{ *bearer }
)

func (u userPostgres) GenerateDatabaseCredential(ctx context.Context, r postgres.GenerateDatabaseCredentialRequest) (*postgres.DatabaseCredential, error) {
	return u.c.Postgres.GenerateDatabaseCredential(u.ctx(ctx), r)
}

func (u userPostgres) GetEndpoint(ctx context.Context, r postgres.GetEndpointRequest) (*postgres.Endpoint, error) {
	return u.c.Postgres.GetEndpoint(u.ctx(ctx), r)
}

func (u userDatabase) GenerateDatabaseCredential(ctx context.Context, r database.GenerateDatabaseCredentialRequest) (*database.DatabaseCredential, error) {
	return u.c.Database.GenerateDatabaseCredential(u.ctx(ctx), r)
}

func (u userDatabase) GetDatabaseInstance(ctx context.Context, r database.GetDatabaseInstanceRequest) (*database.DatabaseInstance, error) {
	return u.c.Database.GetDatabaseInstance(u.ctx(ctx), r)
}

func (u userMe) Me(ctx context.Context, r iam.MeRequest) (*iam.User, error) {
	return u.c.CurrentUser.Me(u.ctx(ctx), r)
}
