package main

import (
	"bufio"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readLine splits as bufio.ScanLines does ("\r\n" too, a last line without
// "\n"), and drops a line over its limit alone; countLines counts the same
// lines of a file.
func TestReadLineSkipsOnlyTheLongLine(t *testing.T) {
	const in = "a\r\n" + "0123456789" + "\n\nlast"
	r := bufio.NewReaderSize(strings.NewReader(in), 16) // lines over the buffer too
	var got []string
	for {
		line, err := readLine(r, 9)
		if errors.Is(err, io.EOF) {
			break
		}
		switch {
		case errors.Is(err, errLineTooLong):
			got = append(got, "TOO LONG")
		case err != nil:
			t.Fatal(err)
		default:
			got = append(got, string(line))
		}
	}
	if want := []string{"a", "TOO LONG", "", "last"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("readLine of %q, limit 9: %q, want %q", in, got, want)
	}
	path := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(path, []byte(in), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := countLines(f); n != 4 || err != nil {
		t.Errorf("countLines of %q: %d, %v; want 4", in, n, err)
	}
}
