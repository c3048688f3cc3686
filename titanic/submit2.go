package titanic

import (
	"strings"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// titanic.submit2 (tsp.SvcSubmit2) is titanic.submit with lifecycle options (extension):
//
//	titanic.submit2 [key | options | service | body...]
//	→ 200 | ticket | new|duplicate | key,  or  400|500 | text | key
//
// The options travel in a service of their own, not as an extra frame of
// titanic.submit or titanic.request, so that a broker that does not know
// them answers 400 "unknown titanic service" instead of storing them as
// the request's first body frame. key may be empty (no idempotency); the
// answer still ends with it (an empty frame). options is one frame of
// space-separated k=v (ParseSubmitOptions); an empty frame asks nothing.

// maxOptionsFrame bounds the options frame of titanic.submit2.
const maxOptionsFrame = 1024

// parseSubmit2 parses the body of titanic.submit2: [key | options |
// service | body...], the options' times made absolute from now.
func parseSubmit2(body [][]byte, now time.Time) (submitReq, error) {
	if len(body) < 2 {
		return submitReq{}, badRequest("titanic.submit2 wants key, options, service and body frames")
	}
	if len(body[0]) > MaxIdemKey {
		return submitReq{}, badRequest("idempotency key must be at most %d bytes", MaxIdemKey)
	}
	lc, err := ParseSubmitOptions(string(body[1]), now)
	if err != nil {
		return submitReq{}, err
	}
	r, err := parseSubmit(body[2:], false)
	if err != nil {
		return r, err
	}
	r.idemKey = string(body[0])
	r.lifecycle = lc
	return r, nil
}

// ParseSubmitOptions parses the options of a submit (the options frame of
// titanic.submit2): space-separated k=v, each key at most once:
//
//	delay=DURATION | at=RFC3339        not dispatched before
//	priority=high|normal|low
//	ttl=DURATION | deadline=RFC3339    fails as expired if not dispatched by then
//	attempts=N                         dispatches before it fails for good
//	backoff=BASE[,MAX]                 exponential backoff between attempts
//
// It reads the syntax only; CheckLifecycle, which the HTTP API uses too,
// checks the values and makes the times absolute from now. Errors wrap
// ErrBadRequest and name the option.
func ParseSubmitOptions(text string, now time.Time) (store.Lifecycle, error) {
	if len(text) > maxOptionsFrame {
		return store.Lifecycle{}, badRequest("options of %d bytes, at most %d", len(text), maxOptionsFrame)
	}
	var o LifecycleOptions
	seen := map[string]bool{}
	for _, field := range strings.Fields(text) {
		k, v, ok := strings.Cut(field, "=")
		if !ok || v == "" {
			return store.Lifecycle{}, badRequest("option %q: want key=value", field)
		}
		if seen[k] {
			return store.Lifecycle{}, badRequest("option %q given twice", k)
		}
		seen[k] = true
		opt := LifecycleOption{Name: k, Value: v}
		switch k {
		case tsp.OptDelay:
			o.Delay = opt
		case tsp.OptAt:
			o.At = opt
		case tsp.OptPriority:
			o.Priority = opt
		case tsp.OptTTL:
			o.TTL = opt
		case tsp.OptDeadline:
			o.Deadline = opt
		case tsp.OptAttempts:
			o.Attempts = opt
		case tsp.OptBackoff:
			base, maxB, two := strings.Cut(v, ",")
			if base == "" || (two && maxB == "") {
				return store.Lifecycle{}, badRequest("option backoff=%s: want BASE[,MAX], each a duration (1s,5m)", v)
			}
			o.Backoff = LifecycleOption{Name: tsp.OptBackoff, Value: base}
			if two {
				o.BackoffMax = LifecycleOption{Name: "backoff max", Value: maxB}
			}
		default:
			return store.Lifecycle{}, badRequest("unknown option %q (want delay, at, priority, ttl, deadline, attempts or backoff)", k)
		}
	}
	return CheckLifecycle(o, now)
}
