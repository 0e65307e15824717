// Python's Value and Array example with anonymous objects:
//
//   num = Value('d', 0.0); arr = Array('i', range(10))
//   p = Process(target=f, args=(num, arr)); p.start(); p.join()
//   print(num.value, arr[:])        # 3.1415927 [0, -1, -2, ...]
#include <cstdio>
#include <numeric>
#include <vector>

#include "shmbus/shmbus.hpp"

int main() {
  shmbus::Value<double> num{0.0};
  std::vector<int> init(10);
  std::iota(init.begin(), init.end(), 0);
  shmbus::Array<int> arr{init};
  shmbus::Process p([&] {
    num.set(3.1415927);
    auto v = arr.view();  // under the array's lock
    for (int& x : v) x = -x;
    return 0;
  });
  p.start();
  p.join();
  std::printf("%.7f [", num.get());
  for (int x : arr) std::printf(" %d", x);
  std::printf(" ]\n");
  return p.exitcode() == 0 && num.get() == 3.1415927 && arr[9] == -9 ? 0 : 1;
}
