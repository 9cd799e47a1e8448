package gormadapter

import (
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
	"go.uber.org/goleak"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/internal/leaktest"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, leaktest.Options()...) }

type Todo struct {
	ID    uint `gorm:"primaryKey"`
	Title string
	Done  bool
}

func TestSQLAndClosePropagation(t *testing.T) {
	db, mock, err := sqlmock.New()
	if err != nil {
		t.Fatal(err)
	}
	mock.ExpectPing()
	gdb, err := open(db, collect([]Option{WithGormConfig(&gorm.Config{Logger: logger.Discard})}))
	if err != nil {
		t.Fatal(err)
	}
	mock.ExpectBegin()
	mock.ExpectQuery(regexp.QuoteMeta(`INSERT INTO "todos" ("title","done") VALUES ($1,$2) RETURNING "id"`)).
		WithArgs("milk", false).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(7))
	mock.ExpectCommit()
	todo := Todo{Title: "milk"}
	if err := gdb.Create(&todo).Error; err != nil || todo.ID != 7 {
		t.Fatalf("Create: %v (id %d)", err, todo.ID)
	}
	mock.ExpectClose()
	sqlDB, _ := gdb.DB()
	if err := sqlDB.Close(); err != nil {
		t.Fatal(err)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Error(err)
	}
}

func TestFailedOpenClosesTheDB(t *testing.T) {
	db, mock, err := sqlmock.New(sqlmock.MonitorPingsOption(true))
	if err != nil {
		t.Fatal(err)
	}
	mock.ExpectPing().WillReturnError(fmt.Errorf("no route"))
	mock.ExpectClose()
	if _, err := open(db, collect(nil)); err == nil {
		t.Fatal("open succeeded with a failing ping")
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Errorf("the DB was not closed after a failed Open: %v", err)
	}
}

func TestAutoMigrateAndCRUDAcrossRotation(t *testing.T) {
	e := lakebasetest.Start(t, lakebasetest.WithMinTTL(time.Second), lakebasetest.WithTTL(2*time.Second))
	w := e.WorkspaceConfig()
	gdb, err := OpenConfig(t.Context(), connector.Config{
		Endpoint: e.Endpoint(), Host: e.Host(), Port: e.Port(), Database: e.Database(), User: e.ServicePrincipal(),
		SSLRootCert: e.CAFile(), WorkspaceConfig: w, LookupEnv: func(string) (string, bool) { return "", false },
		Token: tokensource.Options{EarlyRefresh: time.Second, SafetyMargin: 300 * time.Millisecond, BackgroundRetryMin: 200 * time.Millisecond},
	}, WithGormConfig(&gorm.Config{Logger: logger.Discard}), WithPoolOptions(connector.WithMaxIdleConns(-1)), WithPreferSimpleProtocol())
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := gdb.DB()
	defer sqlDB.Close()
	if err := gdb.AutoMigrate(&Todo{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	n := 0
	for time.Now().Before(deadline) {
		n++
		todo := Todo{Title: fmt.Sprint("t", n)}
		if err := gdb.Create(&todo).Error; err != nil {
			t.Fatalf("Create %d: %v", n, err)
		}
		if err := gdb.Model(&todo).Update("done", true).Error; err != nil {
			t.Fatalf("Update %d: %v", n, err)
		}
	}
	var count int64
	if err := gdb.Model(&Todo{}).Where("done").Count(&count).Error; err != nil || count != int64(n) {
		t.Fatalf("count = %d, %v; want %d", count, err, n)
	}
	if err := gdb.Where("1 = 1").Delete(&Todo{}).Error; err != nil {
		t.Fatal(err)
	}
	if calls := e.Calls(lakebasetest.RouteCredentials); calls < 2 {
		t.Errorf("credential calls = %d, want rotation during the run", calls)
	}
}

// TestOpenAppliesEveryOption: Open (not only OpenConfig) takes
// WithPreferSimpleProtocol — no server-side prepared statements — and every
// WithPoolOptions call.
func TestOpenAppliesEveryOption(t *testing.T) {
	e := lakebasetest.Start(t)
	w := e.WorkspaceConfig()
	c, err := connector.New(t.Context(), connector.Config{
		Endpoint: e.Endpoint(), Host: e.Host(), Port: e.Port(), Database: e.Database(), User: e.ServicePrincipal(),
		SSLRootCert: e.CAFile(), WorkspaceConfig: w, LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatal(err)
	}
	gdb, err := Open(c, WithGormConfig(&gorm.Config{Logger: logger.Discard}), WithPreferSimpleProtocol(),
		WithPoolOptions(connector.WithMaxOpenConns(5)), WithPoolOptions(connector.WithMaxOpenConns(1)))
	if err != nil {
		t.Fatalf("Open with WithPreferSimpleProtocol: %v", err)
	}
	sqlDB, _ := gdb.DB()
	defer sqlDB.Close()
	if got := sqlDB.Stats().MaxOpenConnections; got != 1 {
		t.Errorf("MaxOpenConnections = %d, want 1 (every option applied, the last wins)", got)
	}
	var one, prepared int
	if err := gdb.Raw("SELECT ?::int", 1).Scan(&one).Error; err != nil {
		t.Fatal(err)
	}
	if err := gdb.Raw("SELECT count(*) FROM pg_prepared_statements").Scan(&prepared).Error; err != nil {
		t.Fatal(err)
	}
	if prepared != 0 {
		t.Errorf("%d prepared statements with the simple protocol, want 0", prepared)
	}
}
