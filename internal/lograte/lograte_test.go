package lograte

import (
	"strconv"
	"testing"
	"time"
)

func TestAllowOncePerIntervalWithCount(t *testing.T) {
	l := New(10 * time.Second)
	t0 := time.Unix(1000, 0)
	if n, ok := l.Allow(t0, "a"); !ok || n != 0 {
		t.Fatalf("first line: %d %v, want written", n, ok)
	}
	for i := 1; i <= 5; i++ {
		if _, ok := l.Allow(t0.Add(time.Duration(i)*time.Second), "a"); ok {
			t.Fatalf("line %d within the interval written", i)
		}
	}
	if _, ok := l.Allow(t0.Add(time.Second), "b"); !ok {
		t.Fatal("another kind's first line left out")
	}
	if n, ok := l.Allow(t0.Add(10*time.Second), "a"); !ok || n != 5 {
		t.Fatalf("line after the interval: %d %v, want written with 5 left out", n, ok)
	}
}

func TestKindsBounded(t *testing.T) {
	l := New(10 * time.Second)
	t0 := time.Unix(1000, 0)
	for i := range 2 * maxKinds {
		l.Allow(t0, strconv.Itoa(i))
	}
	if len(l.kinds) > maxKinds {
		t.Fatalf("%d kinds remembered, want at most %d", len(l.kinds), maxKinds)
	}
	// Once the interval has passed, the old kinds make room.
	if _, ok := l.Allow(t0.Add(10*time.Second), "new"); !ok {
		t.Fatal("a new kind after the interval left out")
	}
}
