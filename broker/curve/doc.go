// Package curve is titanic's CURVE security (ZeroMQ RFC 26/CurveZMQ with
// RFC 27/ZAP): key files, the allowlist of permitted client keys, and a
// ZAP handler that applies it.
//
// # Keys
//
// A key pair is two Z85 strings of 40 characters (32 bytes each).
// Keygen(dir, name) writes name.key, the secret file (mode 0600, holding
// both keys), and name.pub, the public file you hand out. Both use the ZPL
// layout of CZMQ certificates:
//
//	#   ZeroMQ CURVE **Secret** Certificate
//	curve
//	    public-key = "<40 Z85 characters>"
//	    secret-key = "<40 Z85 characters>"
//
// LoadKeyPair refuses a secret file that group or others may access (as
// ssh does), a key that is not 40 Z85 characters, and a secret key that
// does not belong to the public key of the same file.
//
// # Allowlist
//
// An Allowlist is a directory of *.pub files, one permitted client key per
// file. Reload re-reads it (the command calls it on SIGHUP) and swaps the
// set atomically; when the directory holds a bad file the reload is
// refused and the previous set stays in force, so that a typo cannot lock
// every client out or let anyone in.
//
// # ZAP
//
// ZeroMQ asks the ZAP handler of a socket's context, bound at
// inproc://zeromq.zap.01, whether a CURVE client may complete its
// handshake. ZAPHandler answers "200" when the client's public key passes
// its Allow function and "400" otherwise; every other mechanism is denied.
// The handler must be bound in the same zmq.Context as the server socket,
// before the server socket binds: libzmq lets every CURVE client in when a
// context has no ZAP handler. For the same reason the handler keeps its
// socket bound until Close, even after a failure, so that handshakes stall
// rather than pass; close the server socket before the handler.
//
// Nothing here touches pebbe/zmq4's global authenticator (zmq.AuthStart),
// which lives on the default context: titanic's sockets live in their own
// contexts.
package curve
