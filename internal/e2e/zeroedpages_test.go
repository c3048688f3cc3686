package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/titanicmq/titanic/store"
)

// Zeroed data pages made the offline tools crash with a Go trace, exit 2
// (a usage error's code): bbolt rebuilds the free page list at open by
// walking the tree in a goroutine of its own, whose panic on a page that
// does not name itself nothing can recover. check, compact and restore
// now call each such file damaged, naming it, exit 1; a zeroed page that
// was free is no damage at all.
func TestZeroedPagesReportedNotPanicked(t *testing.T) {
	base := filepath.Join(t.TempDir(), "titanic.db")
	st, err := store.Open(base, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	body := [][]byte{[]byte(strings.Repeat("x", 700))}
	for i := range 150 {
		op := store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "s" + string(rune('a'+i%5)), Body: body}
		if _, err := st.Apply(context.Background(), []store.Op{op}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(base, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var pages int64
	_ = db.View(func(tx *bolt.Tx) error { pages = tx.Size() / int64(tx.DB().Info().PageSize); return nil })
	pageSize := int64(db.Info().PageSize)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	orig = orig[:pages*pageSize] // without the zeros written ahead

	damaged := 0
	for pg := int64(2); pg < pages; pg++ {
		b := append([]byte(nil), orig...)
		clear(b[pg*pageSize : (pg+1)*pageSize])
		data := t.TempDir()
		path := filepath.Join(data, "titanic.db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		cmds := [][]string{{"check", "--data", data}}
		if pg%4 == 2 { // fewer runs of the slower ones
			cmds = append(cmds, []string{"restore", "--data", filepath.Join(t.TempDir(), "r"), path}, []string{"compact", "--data", data})
		}
		for _, args := range cmds {
			_, stderr, code := cliStderr(t, "", args...)
			switch {
			case code == 0 && args[0] == "check":
				continue // a free page: nothing lost
			case code == 0:
				if strings.Contains(stderr, "panic") {
					t.Errorf("page %d zeroed: titanic %s: exit 0 with a panic:\n%s", pg, args[0], stderr)
				}
			case code != 1 || strings.Contains(stderr, "goroutine ") || !strings.Contains(stderr, "corrupt") || !strings.Contains(stderr, "titanic.db"):
				t.Errorf("page %d zeroed: titanic %s: exit %d, want 0 or 1 naming the file as corrupt:\n%.600s", pg, strings.Join(args, " "), code, stderr)
			default:
				if args[0] == "check" {
					damaged++
				}
			}
		}
	}
	if damaged == 0 {
		t.Fatalf("no zeroed page of %d was found damaged", pages)
	}
	t.Logf("%d of %d zeroed pages reported as damage (the others were free)", damaged, pages-2)
}
