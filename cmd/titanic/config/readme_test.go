package config

import (
	"os"
	"path/filepath"
	"testing"
)

// README.md's configuration reference is the one the struct generates.
func TestReadmeReference(t *testing.T) {
	path := filepath.Join("..", "..", "..", "README.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out, found, err := SpliceReference(string(doc))
	if !found {
		t.Skip("README has no config reference markers yet")
	}
	if err != nil {
		t.Fatal(err)
	}
	if out != string(doc) {
		t.Fatalf("README.md's configuration reference is stale: run `go run ./cmd/titanic/config/gen` from the repository root")
	}
}
