package titanic

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/titanicmq/titanic/store"
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

// Bounds of the submit options. They keep times within what every
// reader handles and catch unit mistakes (a delay in seconds given as
// nanoseconds is harmless; one in years is a typo).
const (
	// MaxScheduleAhead bounds delay, at, ttl and deadline from now.
	MaxScheduleAhead = 5 * 365 * 24 * time.Hour
	// MaxSubmitAttempts bounds attempts=N.
	MaxSubmitAttempts = 1000
	// MaxBackoff bounds both durations of backoff=BASE[,MAX].
	MaxBackoff = 7 * 24 * time.Hour
	// maxOptionsFrame bounds the options frame.
	maxOptionsFrame = 1024
)

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
// titanic.submit2, and the HTTP API's): space-separated k=v, each key at
// most once:
//
//	delay=DURATION | at=RFC3339        not dispatched before
//	priority=high|normal|low
//	ttl=DURATION | deadline=RFC3339    fails as expired if not dispatched by then
//	attempts=N                         dispatches before it fails for good
//	backoff=BASE[,MAX]                 exponential backoff between attempts
//
// Durations are Go's (30s, 1h30m). Times are absolute from now. Errors
// wrap ErrBadRequest and name the option.
func ParseSubmitOptions(text string, now time.Time) (store.Lifecycle, error) {
	var lc store.Lifecycle
	if len(text) > maxOptionsFrame {
		return lc, badRequest("options of %d bytes, at most %d", len(text), maxOptionsFrame)
	}
	seen := map[string]bool{}
	for _, field := range strings.Fields(text) {
		k, v, ok := strings.Cut(field, "=")
		if !ok || v == "" {
			return lc, badRequest("option %q: want key=value", field)
		}
		if seen[k] {
			return lc, badRequest("option %q given twice", k)
		}
		seen[k] = true
		var err error
		switch k {
		case "delay", "ttl":
			var d time.Duration
			if d, err = optDuration(k, v, MaxScheduleAhead); err == nil {
				if k == "delay" {
					lc.Due = now.Add(d)
				} else {
					lc.Deadline = now.Add(d)
				}
			}
		case "at", "deadline":
			var t time.Time
			if t, err = time.Parse(time.RFC3339Nano, v); err != nil {
				err = badRequest("option %s=%q: want an RFC 3339 time (2006-01-02T15:04:05Z)", k, v)
			} else if t.After(now.Add(MaxScheduleAhead)) {
				err = badRequest("option %s=%s: more than %s ahead", k, v, durationText(MaxScheduleAhead))
			} else if k == "at" {
				lc.Due = t.UTC()
			} else {
				lc.Deadline = t.UTC()
			}
		case "priority":
			lc.Priority, err = store.ParsePriority(v)
			if err != nil {
				err = badRequest("option priority: %v", err)
			}
		case "attempts":
			n, perr := strconv.Atoi(v)
			if perr != nil || n < 1 || n > MaxSubmitAttempts {
				err = badRequest("option attempts=%q: want a number from 1 to %d", v, MaxSubmitAttempts)
			}
			lc.Retry.MaxAttempts = n
		case "backoff":
			base, maxB, two := strings.Cut(v, ",")
			if lc.Retry.Base, err = optDuration(k, base, MaxBackoff); err == nil && two {
				lc.Retry.Max, err = optDuration(k, maxB, MaxBackoff)
			}
			switch {
			case err != nil:
			case lc.Retry.Base == 0:
				err = badRequest("option backoff=%s: the base must be above 0", v)
			case two && lc.Retry.Max < lc.Retry.Base:
				err = badRequest("option backoff=%s: the max is below the base", v)
			}
		default:
			err = badRequest("unknown option %q (want delay, at, priority, ttl, deadline, attempts or backoff)", k)
		}
		if err != nil {
			return store.Lifecycle{}, err
		}
	}
	switch {
	case seen["delay"] && seen["at"]:
		return store.Lifecycle{}, badRequest("options delay and at: give one of them")
	case seen["ttl"] && seen["deadline"]:
		return store.Lifecycle{}, badRequest("options ttl and deadline: give one of them")
	case !lc.Deadline.IsZero() && !lc.Deadline.After(now):
		return store.Lifecycle{}, badRequest("option deadline %s has passed", lc.Deadline.Format(time.RFC3339Nano))
	case !lc.Deadline.IsZero() && !lc.Due.IsZero() && !lc.Deadline.After(lc.Due):
		return store.Lifecycle{}, badRequest("the deadline (%s) is not after the due time (%s): the ticket could only expire",
			lc.Deadline.Format(time.RFC3339Nano), lc.Due.Format(time.RFC3339Nano))
	}
	if !lc.Due.IsZero() && !lc.Due.After(now) {
		// Due now or in the past is no delay: the ticket is as a plain
		// one, and needs nothing an older cluster cannot store.
		lc.Due = time.Time{}
	}
	return lc, nil
}

// optDuration parses a non-negative duration option of at most maxD.
func optDuration(k, v string, maxD time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		return 0, badRequest("option %s=%q: want a duration (30s, 5m, 1h30m)", k, v)
	case d < 0:
		return 0, badRequest("option %s=%s: negative", k, v)
	case d > maxD:
		return 0, badRequest("option %s=%s: more than %s", k, v, durationText(maxD))
	}
	return d, nil
}

// durationText writes long durations in days, as people think of them.
func durationText(d time.Duration) string {
	if d >= 48*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.String()
}
