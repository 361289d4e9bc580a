//===- ParallelFor.cpp - A loop on every core that leaves no thread -------===//

#include "dialects/MoE/Utils/ParallelFor.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

namespace mlir::moe {

void parallelFor(int64_t n, const std::function<void(int64_t)> &body) {
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    for (int64_t i = next++; i < n; i = next++) {
      body(i);
    }
  };
  int64_t threads =
      std::min<int64_t>(n, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) {
    pool.emplace_back(worker);
  }
  worker();
  for (std::thread &thread : pool) {
    thread.join();
  }
}

} // namespace mlir::moe
