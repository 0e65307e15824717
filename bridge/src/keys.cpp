// CURVE key pairs: generation, derivation and key files (keys.hpp).
#include "shmbus/bridge/keys.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "shmbus/error.hpp"

namespace shmbus::bridge {

namespace {
constexpr std::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

void require_curve() {
  if (zmq_has("curve") == 0)
    throw Error(Errc::system, "ZeroMQ", "this libzmq was built without CURVE (libsodium)");
}
}  // namespace

void check_z85_key(std::string_view key, std::string_view what) {
  if (key.size() != kZ85KeySize)
    throw Error(Errc::invalid_argument, std::string(what),
                "a CURVE key is 40 Z85 characters, got " + std::to_string(key.size()));
  for (char c : key)
    if (kZ85Alphabet.find(c) == std::string_view::npos)
      throw Error(Errc::invalid_argument, std::string(what),
                  std::string("character '") + c + "' is not in the Z85 alphabet");
}

KeyPair KeyPair::generate() {
  require_curve();
  std::array<char, kZ85KeySize + 1> pub{};
  std::array<char, kZ85KeySize + 1> sec{};
  if (zmq_curve_keypair(pub.data(), sec.data()) != 0)
    throw Error(Errc::system, "ZeroMQ", std::string("zmq_curve_keypair: ") + zmq_strerror(errno));
  return KeyPair{std::string(pub.data(), kZ85KeySize), std::string(sec.data(), kZ85KeySize)};
}

KeyPair KeyPair::from_secret(std::string_view secret_z85) {
  require_curve();
  check_z85_key(secret_z85, "secret key");
  const std::string sec(secret_z85);
  std::array<char, kZ85KeySize + 1> pub{};
  if (zmq_curve_public(pub.data(), sec.c_str()) != 0)
    throw Error(Errc::invalid_argument, "secret key",
                std::string("zmq_curve_public: ") + zmq_strerror(errno));
  return KeyPair{std::string(pub.data(), kZ85KeySize), sec};
}

KeyPair KeyPair::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    const int e = errno;
    throw Error(e == ENOENT   ? Errc::not_found
                : e == EACCES ? Errc::permission_denied
                              : Errc::system,
                path, std::string("cannot read the key file: ") + std::strerror(e));
  }
  KeyPair k;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string tag;
    std::string value;
    words >> tag >> value;
    if (tag.empty() || tag[0] == '#') continue;
    if (tag == "public")
      k.public_key = value;
    else if (tag == "secret")
      k.secret_key = value;
    else
      throw Error(Errc::invalid_argument, path,
                  "unknown line '" + tag + "' (expected 'public <z85>' or 'secret <z85>')");
  }
  if (!k.secret_key.empty()) {
    const KeyPair derived = from_secret(k.secret_key);
    if (!k.public_key.empty() && k.public_key != derived.public_key)
      throw Error(Errc::invalid_argument, path, "the public key is not the secret key's");
    return derived;
  }
  if (k.public_key.empty()) throw Error(Errc::invalid_argument, path, "no 'public' line");
  check_z85_key(k.public_key, path);
  return k;
}

void KeyPair::save(const std::string& path) const {
  check_z85_key(public_key, path);
  if (!secret_key.empty()) check_z85_key(secret_key, path);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int e = errno;
    throw Error(e == EACCES ? Errc::permission_denied : Errc::system, path,
                std::string("cannot write the key file: ") + std::strerror(e));
  }
  ::fchmod(fd, 0600);  // an existing file keeps its mode through O_CREAT
  std::string text = "public " + public_key + "\n";
  if (!secret_key.empty()) text += "secret " + secret_key + "\n";
  const ssize_t n = ::write(fd, text.data(), text.size());
  const int e = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size()))
    throw Error(Errc::system, path, std::string("short write: ") + std::strerror(e));
}

}  // namespace shmbus::bridge
