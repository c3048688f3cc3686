package curve

import (
	"fmt"

	zmq "github.com/pebbe/zmq4"
)

// ClientKeys are what a CURVE client socket needs: the server's public
// key, and the client's own key pair. All are Z85.
type ClientKeys struct {
	// ServerPublic is the public key of the server (the broker's; for a
	// Binary Star pair link, the peer's).
	ServerPublic string
	// Public and Secret are the client's key pair; Public must be on
	// the server's allowlist.
	Public string
	Secret string
}

// Validate checks the three keys, and that Secret belongs to Public.
func (k ClientKeys) Validate() error {
	if err := Available(); err != nil {
		return err
	}
	if err := CheckKey(k.ServerPublic); err != nil {
		return fmt.Errorf("server public key: %w", err)
	}
	if err := (KeyPair{Public: k.Public, Secret: k.Secret}).Validate(); err != nil {
		return fmt.Errorf("client key pair: %w", err)
	}
	return nil
}

// Apply makes s a CURVE client with k. Call it before s connects.
func (k ClientKeys) Apply(s *zmq.Socket) error {
	if err := s.SetCurveServerkey(k.ServerPublic); err != nil {
		return fmt.Errorf("curve server key: %w", err)
	}
	if err := s.SetCurvePublickey(k.Public); err != nil {
		return fmt.Errorf("curve public key: %w", err)
	}
	if err := s.SetCurveSecretkey(k.Secret); err != nil {
		return fmt.Errorf("curve secret key: %w", err)
	}
	return nil
}

// ApplyServer makes s a CURVE server with the key pair kp, whose
// handshakes are checked by the ZAP handler of its context under domain.
// Call it before s binds, after the ZAP handler has started.
func ApplyServer(s *zmq.Socket, kp KeyPair, domain string) error {
	if err := s.SetCurveServer(1); err != nil {
		return fmt.Errorf("curve server: %w", err)
	}
	if err := s.SetCurveSecretkey(kp.Secret); err != nil {
		return fmt.Errorf("curve secret key: %w", err)
	}
	if err := s.SetZapDomain(domain); err != nil {
		return fmt.Errorf("zap domain: %w", err)
	}
	return nil
}
