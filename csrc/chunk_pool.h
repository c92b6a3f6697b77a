// A work-sharing pool that never waits for a thread the OS has not scheduled. palaver_native.so holds the process's
// one pool and exports it (native_step.h); palaver_kernels.so runs its kernels on that same pool.
#pragma once

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

namespace palaver {

// Work sharing that never waits for a thread the OS has not scheduled. The caller claims chunks itself; helpers
// that wake in time claim the rest. With busy neighbours on the same cores, a barrier-based pool (OpenMP's)
// stalls every call until each of its threads gets a time slice; here a late helper simply finds no work left.
class ChunkPool {
 public:
  using Body = std::function<void(int64_t, int64_t)>;

  static ChunkPool& instance() {
    static ChunkPool* pool = new ChunkPool;  // never destroyed: detached helpers wait on it until exit
    return *pool;
  }

  void run(int64_t total, int64_t chunk, const Body& body) {
    const int64_t chunks = (total + chunk - 1) / chunk;
    const int64_t helpers = std::min<int64_t>(threads_.load() - 1, chunks - 1);
    if (helpers <= 0) {
      body(0, total);
      return;
    }
    std::lock_guard<std::mutex> one_call(call_mutex_);  // calls from several threads take turns
    ensure_helpers(helpers);
    const Job job{&body, total, chunk, chunks};
    uint64_t generation;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // Close the old job's counter before opening the new one: a helper late from the old one fails its claim.
      generation = ++generation_;
      job_ = job;
      done_.store(0, std::memory_order_relaxed);
      counter_.store(pack(generation, 0), std::memory_order_release);
      published_.store(generation, std::memory_order_release);
    }
    if (sleepers_.load(std::memory_order_acquire) > 0) wake_.notify_all();
    work(generation, job);
    while (done_.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
  }

  void set_threads(int64_t threads) { threads_.store(std::max<int64_t>(1, threads)); }
  int64_t threads() const { return threads_.load(); }

 private:
  struct Job {
    const Body* body;
    int64_t total, chunk, chunks;
  };
  static constexpr uint64_t kIndexMask = 0xFFFFFFFFull;
  static uint64_t pack(uint64_t generation, uint64_t index) { return (generation << 32) | index; }

  void ensure_helpers(int64_t count) {
    while (static_cast<int64_t>(helpers_) < count) {
      std::thread thread([this] { helper(); });
      pthread_setname_np(thread.native_handle(), "palaver-pool");  // as top -H and /proc/<pid>/task/*/comm show it
      thread.detach();
      ++helpers_;
    }
  }

  // Claim and run chunks of this generation's job until none are left.
  void work(uint64_t generation, const Job& job) {
    uint64_t seen = counter_.load(std::memory_order_acquire);
    while ((seen >> 32) == generation && static_cast<int64_t>(seen & kIndexMask) < job.chunks) {
      if (!counter_.compare_exchange_weak(seen, seen + 1, std::memory_order_acq_rel)) continue;
      const int64_t begin = static_cast<int64_t>(seen & kIndexMask) * job.chunk;
      (*job.body)(begin, std::min(job.total, begin + job.chunk));
      done_.fetch_add(1, std::memory_order_acq_rel);
      seen = counter_.load(std::memory_order_acquire);
    }
  }

  void helper() {
    uint64_t last = 0;
    for (;;) {
      // A decode step calls the kernel every few dozen microseconds: watch for the next call a little while,
      // yielding the core to anyone who wants it, before sleeping until woken.
      for (int spin = 0; spin < kSpins && published_.load(std::memory_order_acquire) == last; ++spin)
        std::this_thread::yield();
      uint64_t generation;
      Job job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        if (generation_ == last) {
          sleepers_.fetch_add(1, std::memory_order_acq_rel);
          wake_.wait(lock, [&] { return generation_ != last; });
          sleepers_.fetch_sub(1, std::memory_order_acq_rel);
        }
        generation = last = generation_;
        job = job_;
      }
      work(generation, job);
    }
  }

  std::mutex call_mutex_, mutex_;
  std::condition_variable wake_;
  size_t helpers_ = 0;
  std::atomic<int64_t> threads_{static_cast<int64_t>(std::max(1u, std::thread::hardware_concurrency()))};
  static constexpr int kSpins = 2000;  // about a millisecond of yields
  std::atomic<uint64_t> counter_{0}, published_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<int64_t> done_{0};
  uint64_t generation_ = 0;
  Job job_{nullptr, 0, 1, 0};
};

}  // namespace palaver
