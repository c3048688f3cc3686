package store

// txnBufs are the writer's buffers for the keys and values of one bbolt
// write transaction. bbolt copies a key at Put, so one key buffer serves
// every op; it keeps the value slice itself until the transaction commits
// (bucket.go: "Supplied value must remain valid for the life of the
// transaction"), so values are carved from an arena that is only reused
// once that transaction has ended. They replace an allocation per key and
// per value, a dozen per submit. Writer goroutine only.
type txnBufs struct {
	key []byte
	// vals is the arena's current chunk; earlier chunks of the same
	// transaction are still held by bbolt, and become garbage with it.
	vals []byte
	// used is what the transaction took from the arena in all, so that
	// the next one gets a chunk that holds it.
	used int
	// names are the service names of the tickets the writer decoded: a
	// dispatch or a reply decodes its ticket, and its service name is
	// then one string per service, not one per op.
	names names
}

// names interns strings, up to maxNames of them: then it starts again,
// so that it follows the services in use without growing for good.
type names struct{ m map[string]string }

const maxNames = 4096

// of is b as a string, from the table if it is there (the lookup does not
// allocate) or else added to it.
func (n *names) of(b []byte) string {
	if s, ok := n.m[string(b)]; ok {
		return s
	}
	if n.m == nil || len(n.m) >= maxNames {
		n.m = make(map[string]string)
	}
	s := string(b)
	n.m[s] = s
	return s
}

const (
	// arenaChunk is the smallest arena chunk; a submit takes about 200
	// bytes of it.
	arenaChunk = 16 << 10
	// arenaMax bounds the chunk kept from one transaction to the next, and
	// arenaOwn the value that gets its own allocation instead: a large
	// body must not pin a large arena for good.
	arenaMax = 1 << 20
	arenaOwn = 64 << 10
)

// reset starts a transaction: every value handed out before is no longer
// referenced (the previous transaction committed or rolled back).
func (b *txnBufs) reset() {
	if want := min(b.used, arenaMax); cap(b.vals) < want {
		b.vals = make([]byte, 0, max(want, arenaChunk))
	}
	b.vals = b.vals[:0]
	b.used = 0
}

// value returns an empty slice with room for n bytes that stay valid until
// the transaction ends: append to it, and appending more than n bytes
// reallocates rather than spill into the next value.
func (b *txnBufs) value(n int) []byte {
	b.used += n
	if n > arenaOwn {
		return make([]byte, 0, n)
	}
	if cap(b.vals)-len(b.vals) < n {
		// The full chunk stays with the values cut from it.
		// At least n: a value up to arenaOwn may be larger than the
		// next chunk would be (a 40 KB body after a 16 KB chunk).
		b.vals = make([]byte, 0, max(n, arenaChunk, min(2*cap(b.vals), arenaMax)))
	}
	off := len(b.vals)
	b.vals = b.vals[:off+n]
	return b.vals[off : off : off+n]
}

// keep copies v into the arena.
func (b *txnBufs) keep(v []byte) []byte { return append(b.value(len(v)), v...) }
