package titanic

import (
	"fmt"
	"strconv"
	"time"

	"github.com/titanicmq/titanic/store"
)

// A submit's lifecycle options come through two doors: the options frame
// of titanic.submit2 (k=v text, ParseSubmitOptions) and the HTTP API's
// JSON (package ops). Each parses its own syntax into LifecycleOptions and
// CheckLifecycle alone decides what is taken, with one set of bounds, so
// that a ticket one door takes is never refused by the other.

// Bounds of the lifecycle options. They keep times within what every
// reader handles and catch unit mistakes ("30000h", a delay in hours given
// as days) that would park a ticket for years or space its attempts out
// by weeks.
const (
	// MaxScheduleAhead bounds delay, at, ttl and deadline from now: a
	// year and a day, so that a yearly job can be scheduled a year ahead.
	MaxScheduleAhead = 366 * 24 * time.Hour
	// MaxSubmitAttempts bounds attempts.
	MaxSubmitAttempts = 1000
	// MaxBackoff bounds both waits of the backoff (its base and its
	// max): a day, the longest pause after which a retry is still the
	// same job rather than one nobody waits for any more.
	MaxBackoff = 24 * time.Hour
)

// LifecycleOption is one lifecycle option as the client wrote it. Name is
// how the client's format spells it ("backoff_max" in JSON), so that an
// error names what the client can find in its own request; an empty Value
// is an option not given.
type LifecycleOption struct{ Name, Value string }

func (o LifecycleOption) given() bool { return o.Value != "" }

// String is the option as errors quote it: name "value".
func (o LifecycleOption) String() string { return fmt.Sprintf("%s %q", o.Name, o.Value) }

// LifecycleOptions are a submit's lifecycle options as given, before
// CheckLifecycle checks them and makes them absolute: durations in Go's
// syntax ("30s", "1h30m"), times in RFC 3339, attempts in decimal.
type LifecycleOptions struct {
	Delay, At           LifecycleOption // not dispatched before (one or the other)
	Priority            LifecycleOption // high, normal or low
	TTL, Deadline       LifecycleOption // fails as expired if not dispatched by then (one or the other)
	Attempts            LifecycleOption // dispatches before it fails for good
	Backoff, BackoffMax LifecycleOption // the exponential backoff's first and largest wait
}

// CheckLifecycle is the one validator of a submit's lifecycle options: it
// checks o against the bounds above and makes its times absolute from now
// (the broker's clock). Durations are never negative; delay, ttl, at and
// deadline are at most MaxScheduleAhead ahead; ttl, backoff and
// backoff_max, when given, are above 0; attempts is 1 to
// MaxSubmitAttempts; the deadline is in the future and after the due
// time; a due time now or past is no delay. Errors wrap ErrBadRequest
// and name the option as o spells it.
func CheckLifecycle(o LifecycleOptions, now time.Time) (store.Lifecycle, error) {
	var lc store.Lifecycle
	switch {
	case o.Delay.given() && o.At.given():
		return lc, badRequest("%s and %s: give one of them, not both", o.Delay.Name, o.At.Name)
	case o.TTL.given() && o.Deadline.given():
		return lc, badRequest("%s and %s: give one of them, not both", o.TTL.Name, o.Deadline.Name)
	}
	var err error
	if o.Delay.given() {
		var d time.Duration
		if d, err = checkDuration(o.Delay, MaxScheduleAhead, false); err != nil {
			return lc, err
		}
		lc.Due = now.Add(d)
	}
	if o.At.given() {
		if lc.Due, err = checkTime(o.At, now); err != nil {
			return lc, err
		}
	}
	if o.Priority.given() {
		if lc.Priority, err = store.ParsePriority(o.Priority.Value); err != nil {
			return lc, badRequest("%s: %v", o.Priority, err)
		}
	}
	if o.TTL.given() {
		var d time.Duration
		if d, err = checkDuration(o.TTL, MaxScheduleAhead, true); err != nil {
			return lc, err
		}
		lc.Deadline = now.Add(d)
	}
	if o.Deadline.given() {
		if lc.Deadline, err = checkTime(o.Deadline, now); err != nil {
			return lc, err
		}
		if !lc.Deadline.After(now) {
			return lc, badRequest("%s: has passed", o.Deadline)
		}
	}
	if !lc.Deadline.IsZero() && !lc.Due.IsZero() && !lc.Deadline.After(lc.Due) {
		return lc, badRequest("the deadline (%s) is not after the due time (%s): the ticket could only expire",
			lc.Deadline.Format(time.RFC3339Nano), lc.Due.Format(time.RFC3339Nano))
	}
	if o.Attempts.given() {
		n, perr := strconv.Atoi(o.Attempts.Value)
		if perr != nil || n < 1 || n > MaxSubmitAttempts {
			return lc, badRequest("%s: want a number from 1 to %d", o.Attempts, MaxSubmitAttempts)
		}
		lc.Retry.MaxAttempts = n
	}
	if o.Backoff.given() {
		if lc.Retry.Base, err = checkDuration(o.Backoff, MaxBackoff, true); err != nil {
			return lc, err
		}
	}
	if o.BackoffMax.given() {
		if lc.Retry.Max, err = checkDuration(o.BackoffMax, MaxBackoff, true); err != nil {
			return lc, err
		}
	}
	if lc.Retry.Base > 0 && lc.Retry.Max > 0 && lc.Retry.Max < lc.Retry.Base {
		return lc, badRequest("%s: below the base, %s", o.BackoffMax, o.Backoff)
	}
	if !lc.Due.IsZero() && !lc.Due.After(now) {
		// Due now or in the past is no delay: the ticket is as a plain
		// one, and needs nothing an older cluster cannot store.
		lc.Due = time.Time{}
	}
	return lc, nil
}

// checkDuration parses a duration option of at most maxD; positive says
// whether 0 is refused (a zero ttl could only expire, a zero backoff
// would silently mean the default).
func checkDuration(o LifecycleOption, maxD time.Duration, positive bool) (time.Duration, error) {
	d, err := time.ParseDuration(o.Value)
	switch {
	case err != nil:
		return 0, badRequest("%s: want a duration (30s, 5m, 1h30m)", o)
	case d < 0:
		return 0, badRequest("%s: negative", o)
	case positive && d == 0:
		return 0, badRequest("%s: must be above 0", o)
	case d > maxD:
		return 0, badRequest("%s: more than %s", o, durationText(maxD))
	}
	return d, nil
}

// checkTime parses a time option of at most MaxScheduleAhead from now.
func checkTime(o LifecycleOption, now time.Time) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, o.Value)
	switch {
	case err != nil:
		return time.Time{}, badRequest("%s: want an RFC 3339 time (2006-01-02T15:04:05Z)", o)
	case t.After(now.Add(MaxScheduleAhead)):
		return time.Time{}, badRequest("%s: more than %s ahead", o, durationText(MaxScheduleAhead))
	}
	return t.UTC(), nil
}

// durationText writes long durations in days, as people think of them.
func durationText(d time.Duration) string {
	switch {
	case d == 24*time.Hour:
		return "1 day"
	case d > 24*time.Hour && d%(24*time.Hour) == 0:
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.String()
}
