package sdkclient

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/databricks/databricks-sdk-go"
	"github.com/databricks/databricks-sdk-go/config"
)

// Limits of the transport NewTransport returns.
const (
	// MaxIdleConnsPerHost is the number of idle keep-alive connections kept
	// to the workspace.
	MaxIdleConnsPerHost = 8
	// IdleConnTimeout closes an idle keep-alive connection.
	IdleConnTimeout = 90 * time.Second
)

// NewTransport returns an HTTP transport meant to be shared by many
// short-lived workspace clients (one per end user's request), so that they
// reuse keep-alive connections instead of each opening its own, with a
// bounded number of idle connections. Its owner calls CloseIdleConnections
// when done.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          2 * MaxIdleConnsPerHost,
		MaxIdleConnsPerHost:   MaxIdleConnsPerHost,
		IdleConnTimeout:       IdleConnTimeout,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// PATWithTransport is PAT with rt as the HTTP transport (nil: the SDK's
// default transport). Like PAT it reads nothing from the environment or
// profiles and makes no network call.
func PATWithTransport(host, token string, rt http.RoundTripper) (*databricks.WorkspaceClient, error) {
	return databricks.NewWorkspaceClient(&databricks.Config{
		Host:                 host,
		Token:                token,
		Credentials:          config.PatCredentials{},
		AuthType:             "pat",
		Loaders:              []config.Loader{noLoader{}},
		HostMetadataResolver: func(context.Context, string) (*config.HostMetadata, error) { return nil, nil },
		HTTPTransport:        rt,
	})
}
