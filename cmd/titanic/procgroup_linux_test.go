package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// running reports the processes whose command line holds marker.
func running(t *testing.T, marker string) []string {
	t.Helper()
	var out []string
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte(marker)) {
			out = append(out, filepath.Base(filepath.Dir(f)))
		}
	}
	return out
}

// gone waits (bounded) until no process holds marker: a SIGKILLed
// process may take a moment to leave /proc.
func gone(t *testing.T, marker string) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := running(t, marker)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A job's command that times out takes what it started with it (sh -c's
// child here): it ran on beside the job's next attempt.
func TestCommandTimeoutKillsItsChildren(t *testing.T) {
	secs := fmt.Sprintf("%d.%03d", 30+time.Now().Nanosecond()%20, os.Getpid()%1000)
	_, err := runCommand(context.Background(), 300*time.Millisecond, -1, []string{"sh", "-c", "sleep " + secs + "; echo done"}, nil)
	if err == nil {
		t.Fatal("a command past its timeout succeeded")
	}
	if left := gone(t, "sleep\x00"+secs); len(left) > 0 {
		t.Fatalf("the timed-out job's child %v runs on", left)
	}
}

// A command that exits 0 while a process it started in the background
// holds its output open is a success, its output the reply, and the
// background process is killed: it was reported failed, and every retry
// started another.
func TestCommandBackgroundChildDoesNotFailIt(t *testing.T) {
	secs := fmt.Sprintf("%d.%03d", 50+time.Now().Nanosecond()%20, os.Getpid()%1000)
	out, err := runCommand(context.Background(), time.Minute, -1, []string{"sh", "-c", "sleep " + secs + " & echo hi; exit 0"}, nil)
	if err != nil || len(out) != 1 || string(out[0]) != "hi\n" {
		t.Fatalf("runCommand = %q, %v; want the reply \"hi\" and no error", out, err)
	}
	if left := gone(t, "sleep\x00"+secs); len(left) > 0 {
		t.Fatalf("the job's background child %v runs on", left)
	}
}
