package lakebasetest

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/databricks/databricks-sdk-go/service/iam"

	"github.com/lakebase-go/lakebase/internal/sdkclient"
)

func TestRefusingWorkspaceURL(t *testing.T) {
	u := RefusingWorkspaceURL(t)
	_, err := net.DialTimeout("tcp", strings.TrimPrefix(u, "http://"), 5*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial %s: want connection refused, got %v", u, err)
	}
}

func TestSilentWorkspaceURL(t *testing.T) {
	u := SilentWorkspaceURL(t)
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(u, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var b [1]byte
	if _, err := c.Read(b[:]); !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
		t.Errorf("read: want a timeout, got %v", err)
	}
	// Through the SDK, a call is bounded by the caller's ctx.
	w, err := sdkclient.PAT(u, "dapi-x", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := w.CurrentUser.Me(ctx, iam.MeRequest{}); err == nil {
		t.Error("Me answered by a silent workspace")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Me took %v with a 300 ms ctx", d)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
