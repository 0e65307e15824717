// A task's exception comes back to the caller as its own type, as in the
// seeds' multiprocessing example:
//
//   def divide(x, y):
//       return x / y
//   with Pool(processes=4) as pool:
//       results = pool.apply_async(divide, args=(1, 0))
//       try:
//           print(results.get())   # This will raise a ZeroDivisionError
//       except ZeroDivisionError as e:
//           print(f"Caught exception: {e}")
//
// Standard exceptions come back as themselves, a type given to
// shmbus::register_exception<E>() too, and any other as shmbus::RemoteError
// naming its type and what(). Strings and tuples travel with the tasks.
//
// Run it on its own: it exits 0 when every exception came back as expected.
#include <cstdio>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "shmbus/shmbus.hpp"

namespace {

double divide(double x, double y) {
  if (y == 0) throw std::domain_error("division by zero");
  return x / y;
}

struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct Unregistered : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int parse(const std::string& field) {
  if (field.empty() || field.find_first_not_of("0123456789") != std::string::npos)
    throw ParseError("not a number: '" + field + "'");
  return std::stoi(field);
}

int strict(const std::string& field) {
  if (field.size() > 3) throw Unregistered("too long: " + field);
  return static_cast<int>(field.size());
}

}  // namespace

int main() {
  shmbus::register_exception<ParseError>();
  shmbus::Pool pool({.processes = 4});
  int ok = 0;

  auto result = pool.apply_async(divide, 1.0, 0.0);
  try {
    std::printf("%g\n", result.get());
  } catch (const std::domain_error& e) {
    std::printf("Caught exception: %s\n", e.what());
    ++ok;
  }

  try {
    (void)pool.map(parse, std::vector<std::string>{"12", "7", "x1"});
  } catch (const ParseError& e) {
    std::printf("Caught ParseError: %s\n", e.what());
    ++ok;
  }

  try {
    (void)pool.starmap([](const std::string& a, const std::string& b) { return strict(a + b); },
                       std::vector<std::tuple<std::string, std::string>>{{"a", "b"}, {"cd", "ef"}});
  } catch (const shmbus::RemoteError& e) {
    std::printf("Caught %s: %s (%s)\n", e.type_name().c_str(), e.remote_what().c_str(), e.what());
    ok += e.remote_what() == "too long: cdef";
  }

  pool.close();
  pool.join();
  return ok == 3 ? 0 : 1;
}
