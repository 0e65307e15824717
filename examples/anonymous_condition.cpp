// Python's doctor and patients with an anonymous Condition: the patients
// wait until the doctor, holding the condition's lock, says they may come.
#include <cstdio>
#include <vector>

#include "shmbus/shmbus.hpp"

using namespace std::chrono_literals;

int main() {
  shmbus::Condition cond;
  shmbus::Value<int> doctor_ready{0};
  shmbus::Value<int> seen{0};
  std::vector<shmbus::Process> patients;
  for (int i = 1; i <= 3; ++i) {
    patients.emplace_back([&, i] {
      std::unique_lock g(cond);
      if (!cond.wait_for([&] { return doctor_ready.get() == 1; }, 10s)) return 1;
      std::printf("patient %d: seen by the doctor\n", i);
      seen.fetch_add(1);
      return 0;
    });
    patients.back().start();
  }
  {
    std::unique_lock g(cond);
    std::printf("doctor: ready\n");
    doctor_ready.set(1);
    cond.notify_all();
  }
  int failures = 0;
  for (auto& p : patients) {
    p.join();
    if (p.exitcode() != 0) ++failures;
  }
  return failures == 0 && seen.get() == 3 ? 0 : 1;
}
