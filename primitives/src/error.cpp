#include "shmbus/error.hpp"

namespace shmbus {

std::string_view to_string(Errc code) noexcept {
  switch (code) {
    case Errc::invalid_name:
      return "invalid_name";
    case Errc::not_found:
      return "not_found";
    case Errc::already_exists:
      return "already_exists";
    case Errc::wrong_kind:
      return "wrong_kind";
    case Errc::wrong_type:
      return "wrong_type";
    case Errc::wrong_version:
      return "wrong_version";
    case Errc::truncated:
      return "truncated";
    case Errc::corrupted:
      return "corrupted";
    case Errc::not_ready:
      return "not_ready";
    case Errc::permission_denied:
      return "permission_denied";
    case Errc::attach_table_full:
      return "attach_table_full";
    case Errc::invalid_argument:
      return "invalid_argument";
    case Errc::closed:
      return "closed";
    case Errc::peer_dead:
      return "peer_dead";
    case Errc::too_large:
      return "too_large";
    case Errc::not_owner:
      return "not_owner";
    case Errc::value_error:
      return "value_error";
    case Errc::broken_barrier:
      return "broken_barrier";
    case Errc::task_failed:
      return "task_failed";
    case Errc::system:
      return "system";
    case Errc::decode_error:
      return "decode_error";
    case Errc::timed_out:
      return "timed_out";
  }
  return "unknown";
}

namespace {
std::string compose(Errc code, const std::string& object, const std::string& reason) {
  std::string what = "shmbus: ";
  if (!object.empty()) what += "'" + object + "': ";
  what += reason.empty() ? std::string(to_string(code)) : reason;
  what += " [" + std::string(to_string(code)) + "]";
  return what;
}
}  // namespace

Error::Error(Errc code, std::string object, std::string reason)
    : std::runtime_error(compose(code, object, reason)),
      code_(code),
      object_(std::move(object)),
      reason_(std::move(reason)) {}

}  // namespace shmbus
