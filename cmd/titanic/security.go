package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/broker/curve"
	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/cmd/titanic/config"
)

// security is the broker's CURVE material.
type security struct {
	keys      curve.KeyPair
	allow     *curve.Allowlist
	pairCurve *binarystar.CurveConfig
	log       *slog.Logger
}

// loadSecurity loads the key pair and the allowlist when security.curve is
// on (nil otherwise).
func loadSecurity(cfg config.Config, log *slog.Logger) (*security, error) {
	if !cfg.Security.Curve {
		return nil, nil
	}
	if err := curve.Available(); err != nil {
		return nil, err
	}
	kp, err := curve.LoadKeyPair(cfg.Security.SecretKeyFile)
	if err != nil {
		return nil, fmt.Errorf("security.secret_key_file: %w", err)
	}
	al, err := curve.Load(cfg.Security.PublicKeysDir)
	if err != nil {
		return nil, fmt.Errorf("security.public_keys_dir: %w", err)
	}
	s := &security{keys: kp, allow: al, log: log}
	if cfg.Pair.Role != "" {
		if cfg.Pair.PeerKey == "" {
			return nil, usagef("pair mode with CURVE needs --peer-key (the peer's public key file)")
		}
		peer, err := curve.LoadPublic(cfg.Pair.PeerKey)
		if err != nil {
			return nil, fmt.Errorf("pair.peer_key: %w", err)
		}
		s.pairCurve = &binarystar.CurveConfig{Public: kp.Public, Secret: kp.Secret, PeerPublic: peer}
	}
	log.Info("CURVE security on", "public_key", kp.Public, "allowed_keys", al.Len())
	return s, nil
}

// reloadOnHUP reloads the allowlist on SIGHUP until ctx is done.
func (s *security) reloadOnHUP(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := s.allow.Reload(); err != nil {
				s.log.Error("allowlist reload refused; the previous list stays", "err", err)
				continue
			}
			s.log.Info("allowlist reloaded", "allowed_keys", s.allow.Len())
		}
	}
}

// clientCurve builds a client's CURVE keys from --curve-server-key (the
// broker's public key file) and --curve-key (this client's key file).
func clientCurve(serverKey, ownKey string) (*client.CurveClient, error) {
	if serverKey == "" && ownKey == "" {
		return nil, nil
	}
	if serverKey == "" || ownKey == "" {
		return nil, usagef("CURVE needs both --curve-server-key and --curve-key")
	}
	srv, err := curve.LoadPublic(serverKey)
	if err != nil {
		return nil, err
	}
	kp, err := curve.LoadKeyPair(ownKey)
	if err != nil {
		return nil, err
	}
	return &client.CurveClient{ServerPublic: srv, Public: kp.Public, Secret: kp.Secret}, nil
}

// runKeygen makes a CURVE key pair: NAME.key (secret, mode 0600) and
// NAME.pub (public: copy it into the broker's public_keys_dir).
func runKeygen(e env) error {
	fs := newFlags(e, "keygen", "[flags] NAME")
	dir := fs.String("dir", ".", "directory to write NAME.key and NAME.pub in")
	if err := e.parseFlags(fs, e.args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want one NAME")
	}
	if err := e.goAhead(); err != nil {
		return err
	}
	kp, err := curve.Keygen(*dir, fs.Arg(0))
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "public key %s\nwrote %s/%s%s (secret) and %s/%s%s (public)\n", kp.Public, *dir, fs.Arg(0), curve.SecretExt, *dir, fs.Arg(0), curve.PublicExt)
	return nil
}
