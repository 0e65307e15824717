// shmbus::bridge::KeyPair — a CURVE key pair (ZeroMQ's CurveZMQ: Curve25519
// keys, 40-character Z85 text), what authkey is to Python's
// multiprocessing.connection, and more: every client has its own key, the
// listener lists the public keys it accepts, and the traffic is encrypted.
//
//   auto server = shmbus::bridge::KeyPair::generate();
//   server.save("/etc/bus-bridge/server.key");          // 0600, both keys
//   auto again = shmbus::bridge::KeyPair::load("/etc/bus-bridge/server.key");
//   std::string pub = again.public_key;                 // give this to clients
//
// Key file format: two lines, "public <z85>" and "secret <z85>"; a file
// holding only a "public" line loads as a KeyPair with an empty secret
// (what a client needs of the server, what a listener needs of a client).
// Setup calls throw shmbus::Error (invalid_argument for a malformed key,
// not_found / permission_denied / system for the file).
#pragma once

#include <string>
#include <string_view>

namespace shmbus::bridge {

inline constexpr std::size_t kZ85KeySize = 40;

struct KeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters; empty for a public key alone

  // A new random key pair (zmq_curve_keypair). Throws Error(system) when
  // the ZeroMQ library was built without CURVE.
  [[nodiscard]] static KeyPair generate();
  // The pair of a secret key (zmq_curve_public).
  [[nodiscard]] static KeyPair from_secret(std::string_view secret_z85);
  [[nodiscard]] static KeyPair load(const std::string& path);
  // Writes the file with mode 0600 (the secret line only when there is one).
  void save(const std::string& path) const;
};

// Throws Error(invalid_argument, what, ...) unless `key` is 40 characters of
// the Z85 alphabet.
void check_z85_key(std::string_view key, std::string_view what);

}  // namespace shmbus::bridge
