package config

import (
	"errors"
	"strings"
	"testing"
)

// TestPeeringNameLongerThanRoutingID: a peering name is the routing id of
// the cloud sockets, which ZeroMQ caps at 255 bytes. A longer name must
// be refused by validation, naming the setting (README: bad values stop
// the broker "with a message naming the setting"), not pass and make
// `titanic broker` exit later with "peering identity: invalid argument";
// a peer's longer name could never match a routing id.
func TestPeeringNameLongerThanRoutingID(t *testing.T) {
	long := strings.Repeat("a", 256)
	for _, tc := range []struct {
		name, setting string
		edit          func(*PeeringSection)
	}{
		{"own name", "peering.name", func(p *PeeringSection) { p.Name = long }},
		{"peer name", "peering.peers", func(p *PeeringSection) { p.Peers[0].Name = long }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Peering = PeeringSection{Name: "a", CloudListen: "tcp://127.0.0.1:5570", StateListen: "tcp://127.0.0.1:5571",
				Peers: []Peer{{Name: "b", Cloud: "tcp://h:1", State: "tcp://h:2"}}}
			tc.edit(&c.Peering)
			err := c.Validate()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.setting) {
				t.Fatalf("a %d-byte peering name: Validate() = %v; want an error naming %s (ZeroMQ routing ids are at most 255 bytes)", len(long), err, tc.setting)
			}
		})
	}
	c := Default()
	c.Peering = PeeringSection{Name: long[:255], CloudListen: "tcp://127.0.0.1:5570", StateListen: "tcp://127.0.0.1:5571",
		Peers: []Peer{{Name: strings.Repeat("b", 255), Cloud: "tcp://h:1", State: "tcp://h:2"}}}
	if err := c.Validate(); err != nil {
		t.Fatalf("255-byte peering names: Validate() = %v; want nil", err)
	}
}
