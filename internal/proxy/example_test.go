package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/internal/proxy"
	"github.com/lakebase-go/lakebase/lakebasetest"
)

// Listening beyond loopback is refused unless explicitly allowed with a
// client password; nothing is looked up or minted first.
func ExampleNew_nonLoopback() {
	_, err := proxy.New(context.Background(), proxy.Config{
		Listen:    []string{"0.0.0.0:0"},
		Connector: connector.Config{LookupEnv: func(string) (string, bool) { return "", false }},
	})
	var ce *proxy.ConfigError
	fmt.Println(errors.As(err, &ce), ce.Setting)
	// Output:
	// true Listen (--listen)
}

// A proxy in front of the emulator: clients connect to s.Addrs()[0]
// without a password, as the proxy's role.
func ExampleServer_Run() {
	ctx := context.Background()
	e, err := lakebasetest.New(ctx)
	if err != nil {
		fmt.Println(err) // without PostgreSQL binaries
		return
	}
	defer e.Close()
	s, err := proxy.New(ctx, proxy.Config{
		Listen: []string{"127.0.0.1:0"},
		Connector: connector.Config{Endpoint: e.Endpoint(), Host: e.Host(), Port: e.Port(), SSLRootCert: e.CAFile(),
			WorkspaceConfig: e.WorkspaceConfig(), LookupEnv: func(string) (string, bool) { return "", false }},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	fmt.Println(s.Addrs()[0].(*net.TCPAddr).IP, s.Connector().Role())
	stop()
	fmt.Println(<-done)
}
