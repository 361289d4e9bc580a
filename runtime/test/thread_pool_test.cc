//===- thread_pool_test.cc - The runtime's parallel loops -----------------===//
//
// moert_pool_do_par_for as Halide's kernels call it: every index exactly
// once at every thread count, the first error returned, a loop started from
// inside a task, thousands of short loops (the slots' reuse), two callers at
// once, workers that really take part, and workers woken from sleep and
// stopped while asleep. Built plain, with ASan + UBSan,
// and with TSan.
//
//===----------------------------------------------------------------------===//

#include <atomic>
#include <chrono>
#include <cstdint>
#include <gtest/gtest.h>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

extern "C" int moert_pool_set_threads(int threads);
extern "C" int moert_pool_do_par_for(void *user_context,
                                     int (*f)(void *, int, uint8_t *), int min,
                                     int extent, uint8_t *closure);

namespace {

/// One parallel loop of `task` over [min, min + extent) with `closure`.
template <typename T>
int loop(int (*task)(void *, int, uint8_t *), int min, int extent, T *closure) {
  return moert_pool_do_par_for(nullptr, task, min, extent,
                               reinterpret_cast<uint8_t *>(closure));
}

struct Counts {
  int min = 0;
  std::vector<std::atomic<int>> hits;
  explicit Counts(int min, int extent) : min(min), hits(extent) {}
};

int countTask(void *, int i, uint8_t *closure) {
  auto *counts = reinterpret_cast<Counts *>(closure);
  counts->hits[i - counts->min].fetch_add(1);
  return 0;
}

void expectEachOnce(Counts &counts) {
  for (size_t i = 0; i < counts.hits.size(); ++i) {
    ASSERT_EQ(counts.hits[i].load(), 1) << "index " << counts.min + i;
  }
}

TEST(ThreadPool, EveryIndexOnceAtEveryThreadCount) {
  for (int threads : {1, 2, 3, 4, 2, 1}) {
    ASSERT_EQ(moert_pool_set_threads(threads), 0);
    for (int extent : {0, 1, 2, 7, 1000}) {
      Counts counts(7, extent);
      EXPECT_EQ(loop(countTask, 7, extent, &counts), 0);
      expectEachOnce(counts);
    }
  }
}

int failAt500(void *, int i, uint8_t *) { return i == 500 ? 5 : 0; }

TEST(ThreadPool, ReturnsTheError) {
  ASSERT_EQ(moert_pool_set_threads(2), 0);
  EXPECT_EQ(loop(failAt500, 0, 1000, static_cast<int *>(nullptr)), 5);
  // The next loop starts clean.
  Counts counts(0, 100);
  EXPECT_EQ(loop(countTask, 0, 100, &counts), 0);
  expectEachOnce(counts);
}

struct Nested {
  std::atomic<int> total{0};
};

int innerTask(void *, int i, uint8_t *closure) {
  reinterpret_cast<Nested *>(closure)->total.fetch_add(i);
  return 0;
}

int outerTask(void *, int, uint8_t *closure) {
  // A loop from inside a task runs on the thread that started it.
  return loop(innerTask, 0, 10, closure);
}

TEST(ThreadPool, LoopInsideATask) {
  ASSERT_EQ(moert_pool_set_threads(2), 0);
  Nested nested;
  EXPECT_EQ(loop(outerTask, 0, 20, &nested), 0);
  EXPECT_EQ(nested.total.load(), 20 * 45);
}

TEST(ThreadPool, ThousandsOfShortLoops) {
  ASSERT_EQ(moert_pool_set_threads(2), 0);
  for (int n = 0; n < 20000; ++n) {
    int extent = 2 + n % 4;
    Counts counts(n, extent);
    ASSERT_EQ(loop(countTask, n, extent, &counts), 0);
    expectEachOnce(counts);
  }
}

TEST(ThreadPool, TwoCallersAtOnce) {
  ASSERT_EQ(moert_pool_set_threads(2), 0);
  auto caller = [] {
    for (int n = 0; n < 2000; ++n) {
      Counts counts(0, 16);
      ASSERT_EQ(loop(countTask, 0, 16, &counts), 0);
      expectEachOnce(counts);
    }
  };
  std::thread a(caller), b(caller);
  a.join();
  b.join();
}

struct Meeting {
  std::mutex lock;
  std::set<std::thread::id> threads;
};

int meetTask(void *, int, uint8_t *closure) {
  auto *meeting = reinterpret_cast<Meeting *>(closure);
  {
    std::lock_guard<std::mutex> guard(meeting->lock);
    meeting->threads.insert(std::this_thread::get_id());
  }
  // Long enough for a sleeping worker to wake and take the next index.
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  return 0;
}

TEST(ThreadPool, WorkersTakePart) {
  ASSERT_EQ(moert_pool_set_threads(2), 0);
  Meeting meeting;
  EXPECT_EQ(loop(meetTask, 0, 200, &meeting), 0);
  EXPECT_EQ(meeting.threads.size(), 2u);
  ASSERT_EQ(moert_pool_set_threads(1), 0);
}

} // namespace

namespace {

TEST(ThreadPool, SleepingWorkersWakeAndStop) {
  ASSERT_EQ(moert_pool_set_threads(2), 0);
  for (int round = 0; round < 3; ++round) {
    // Longer than a worker spins: it is asleep when the loop starts.
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    Meeting meeting;
    EXPECT_EQ(loop(meetTask, 0, 50, &meeting), 0);
    EXPECT_EQ(meeting.threads.size(), 2u) << "round " << round;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(moert_pool_set_threads(1), 0); // joins a sleeping worker
}

} // namespace
