package broker

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/titanicmq/titanic/broker/curve"
	"github.com/titanicmq/titanic/broker/mdp"
	"github.com/titanicmq/titanic/broker/zsock"
)

// withDefaults returns c with its zero fields set from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if len(c.Endpoints) == 0 {
		c.Endpoints = d.Endpoints
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.HeartbeatLiveness == 0 {
		c.HeartbeatLiveness = d.HeartbeatLiveness
	}
	if c.LeaseTimeout == 0 {
		c.LeaseTimeout = d.LeaseTimeout
	}
	if c.RequestExpiry == 0 {
		c.RequestExpiry = d.RequestExpiry
	}
	if c.MaxQueue == 0 {
		c.MaxQueue = d.MaxQueue
	}
	if c.MaxQueuedBytes == 0 {
		c.MaxQueuedBytes = d.MaxQueuedBytes
	}
	if c.MaxMsgSize == 0 {
		c.MaxMsgSize = d.MaxMsgSize
	}
	if c.MaxFrames <= 0 {
		c.MaxFrames = zsock.DefaultMaxFrames
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.Curve != nil {
		// A copy of the caller's settings, with this broker's handler:
		// a Broker runs once, and so does its handler.
		cc := *c.Curve
		if cc.Domain == "" {
			cc.Domain = DefaultCurveDomain
		}
		zc := curve.ZAPConfig{
			Allow:        cc.Allow,
			Domain:       cc.Domain,
			Logger:       c.Logger,
			DenyLogEvery: cc.DenyLogEvery,
		}
		if pc := c.Peering; pc != nil && pc.curved(&cc) {
			peers := make(map[string]bool, len(pc.Peers))
			for _, p := range pc.Peers {
				peers[p.Public] = true
			}
			zc.Others = map[string]func(string) bool{PeeringCurveDomain: func(k string) bool { return peers[k] }}
		}
		cc.zap = curve.NewZAPHandler(zc)
		c.Curve = &cc
	}
	if c.Peering != nil {
		pc := *c.Peering
		if pc.StateEvery <= 0 {
			pc.StateEvery = time.Second
		}
		if pc.Liveness <= 0 {
			pc.Liveness = 3
		}
		pc.Peers = append([]Peer(nil), pc.Peers...)
		c.Peering = &pc
	}
	return c
}

// Validate reports the first invalid setting of c. Zero values are invalid
// here; New fills them from DefaultConfig before it validates.
func (c Config) Validate() error {
	var errs []error
	if len(c.Endpoints) == 0 {
		errs = append(errs, errors.New("no endpoints"))
	}
	for _, ep := range c.Endpoints {
		if strings.TrimSpace(ep) == "" {
			errs = append(errs, errors.New("empty endpoint"))
		}
	}
	if c.HeartbeatInterval <= 0 {
		errs = append(errs, fmt.Errorf("heartbeat interval %s: must be positive", c.HeartbeatInterval))
	}
	if c.HeartbeatLiveness < 1 {
		errs = append(errs, fmt.Errorf("heartbeat liveness %d: must be at least 1", c.HeartbeatLiveness))
	}
	if c.LeaseTimeout <= 0 {
		errs = append(errs, fmt.Errorf("lease timeout %s: must be positive", c.LeaseTimeout))
	}
	if c.RequestExpiry <= 0 {
		errs = append(errs, fmt.Errorf("request expiry %s: must be positive", c.RequestExpiry))
	}
	if c.MaxQueue < 1 {
		errs = append(errs, fmt.Errorf("max queue %d: must be at least 1", c.MaxQueue))
	}
	if pc := c.Peering; pc != nil {
		if pc.Name == "" || strings.HasPrefix(pc.Name, "\x00") || pc.CloudListen == "" || pc.StateListen == "" {
			errs = append(errs, errors.New("peering needs a name, a cloud endpoint and a state endpoint"))
		}
		seen := map[string]bool{pc.Name: true}
		keyed := 0
		for _, p := range pc.Peers {
			if p.Name == "" || p.Cloud == "" || p.State == "" || seen[p.Name] {
				errs = append(errs, fmt.Errorf("peer %+v: needs a unique name (not this broker's), a cloud and a state endpoint", p))
			}
			seen[p.Name] = true
			if p.Public != "" {
				keyed++
				if err := curve.CheckKey(p.Public); err != nil {
					errs = append(errs, fmt.Errorf("peer %s: public key: %w", p.Name, err))
				}
			}
		}
		switch {
		case keyed > 0 && keyed < len(pc.Peers):
			errs = append(errs, fmt.Errorf("peering: %d of %d peers have a CURVE key: the links are CURVE for all or none", keyed, len(pc.Peers)))
		case keyed > 0 && c.Curve == nil:
			errs = append(errs, errors.New("peering: the peers' CURVE keys need the broker's CURVE key pair (Curve)"))
		}
	}
	if c.MaxQueuedBytes < 1 {
		errs = append(errs, fmt.Errorf("max queued bytes %d: must be at least 1", c.MaxQueuedBytes))
	}
	if c.Curve != nil {
		if err := c.Curve.validate(); err != nil {
			errs = append(errs, fmt.Errorf("curve: %w", err))
		}
		if c.MaxMsgSize > 0 && c.MaxMsgSize < MinCurveMsgSize {
			// libzmq applies ZMQ_MAXMSGSIZE to handshake commands too.
			errs = append(errs, fmt.Errorf("max message size %d: CURVE handshakes need at least %d", c.MaxMsgSize, MinCurveMsgSize))
		}
	}
	return errors.Join(errs...)
}

func (c *CurveConfig) validate() error {
	if err := curve.Available(); err != nil {
		return err
	}
	var errs []error
	if err := c.Server.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("server key pair: %w", err))
	}
	if c.Allow == nil {
		errs = append(errs, errors.New("no Allow function (an allowlist is required)"))
	}
	if c.DenyLogEvery < 0 {
		errs = append(errs, fmt.Errorf("deny log interval %s: must not be negative", c.DenyLogEvery))
	}
	return errors.Join(errs...)
}

// checkPrefix validates a Handler prefix.
func checkPrefix(prefix string) error {
	switch {
	case prefix == "":
		return errors.New("empty prefix")
	case len(prefix) > mdp.MaxServiceName:
		return fmt.Errorf("prefix of %d bytes, limit %d", len(prefix), mdp.MaxServiceName)
	case strings.HasPrefix(prefix, mmiPrefix) || strings.HasPrefix(mmiPrefix, prefix):
		return fmt.Errorf("prefix %q overlaps the reserved %q services", prefix, mmiPrefix)
	}
	return nil
}
