package client

import (
	"errors"
	"testing"
)

// TestNewRefusesNotifyEndpointWithoutTransport: New refuses a broker
// endpoint without its transport ("127.0.0.1:5555") with ErrConfig,
// saying what to write; a Notify endpoint so written is taken, and every
// Wait then fails with zmq's "connect 127.0.0.1:5556: invalid argument"
// (titanic reply --wait --notify 127.0.0.1:5556: exit 1, not the usage
// error, exit 2, of --broker 127.0.0.1:5555).
func TestNewRefusesNotifyEndpointWithoutTransport(t *testing.T) {
	if _, err := New(Config{Brokers: []string{"127.0.0.1:28555"}}); !errors.Is(err, ErrConfig) {
		t.Fatalf("Brokers without transport: %v, want ErrConfig", err)
	}
	c, err := New(Config{Brokers: []string{"tcp://127.0.0.1:28555"}, Notify: []string{"127.0.0.1:28556"}})
	if err == nil {
		c.Close()
	}
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("Notify without transport: New answered %v, want ErrConfig", err)
	}
}

// TestNewRefusesOverlongID: the broker refuses a titanic.hello whose id is
// over 128 bytes (titanic.MaxClientID), and the client ignores the
// hello's answer (logged at debug), so a Config.ID of 129 bytes is taken
// by New and the client silently never appears in `titanic clients` or
// /api/v1/clients: New validates Brokers and Curve with ErrConfig, not ID.
func TestNewRefusesOverlongID(t *testing.T) {
	long := make([]byte, 129)
	for i := range long {
		long[i] = 'c'
	}
	c, err := New(Config{Brokers: []string{"tcp://127.0.0.1:28555"}, ID: string(long)})
	if err == nil {
		c.Close()
	}
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("ID of 129 bytes: New answered %v, want ErrConfig (the broker refuses every hello of it)", err)
	}
}
