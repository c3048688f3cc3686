package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// runCommand keeps only the tail of a command's stderr, and takes its
// stdout as the reply up to maxOutput bytes, failing the attempt past it.
func TestCommandOutputBounds(t *testing.T) {
	_, err := runCommand(context.Background(), time.Minute, -1,
		[]string{"sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x >&2; echo end >&2; exit 3"}, nil)
	if err == nil || !strings.HasSuffix(err.Error(), "xxend") || len(err.Error()) > stderrTail+len("exit status 3: ") {
		t.Errorf("a command failing after 100000 bytes of stderr: %q; want exit status 3 and the last %d bytes of stderr", err, stderrTail)
	}
	out, err := runCommand(context.Background(), time.Minute, 1024, []string{"head", "-c", "1024", "/dev/zero"}, nil)
	if err != nil || len(out) != 1 || len(out[0]) != 1024 {
		t.Errorf("1024 bytes of stdout with maxOutput 1024: %d frames, err %v; want the 1024 bytes as the reply", len(out), err)
	}
	_, err = runCommand(context.Background(), time.Minute, 1023, []string{"head", "-c", "1024", "/dev/zero"}, nil)
	if err == nil || !strings.Contains(err.Error(), "over --max-output 1023") {
		t.Errorf("1024 bytes of stdout with maxOutput 1023: %v; want the attempt failed naming --max-output", err)
	}
	start := time.Now()
	_, err = runCommand(context.Background(), time.Minute, 1<<20, []string{"yes"}, nil)
	if el := time.Since(start); err == nil || !strings.Contains(err.Error(), "over --max-output 1MiB") || el > 30*time.Second {
		t.Errorf("yes with maxOutput 1MiB: %v after %s; want it killed at once, naming --max-output", err, el)
	}
}
