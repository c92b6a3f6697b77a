// The native step's KV cache: sequences' keys and values in pages drawn from one pool that is mapped once, when the
// cache is made, and sized by its page budget.
#pragma once

#include "native_step.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define PALAVER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PALAVER_ASAN 1
#endif
#endif
#ifdef PALAVER_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace palaver {

// Under AddressSanitizer, the pages are fenced as if each were its own allocation: a poisoned gap after each page
// catches a write past its end, and a page given back is poisoned until it is handed out again.
#ifdef PALAVER_ASAN
constexpr int64_t kGuardHalves = 32;
inline void poison(const void* at, int64_t bytes) { ASAN_POISON_MEMORY_REGION(at, static_cast<size_t>(bytes)); }
inline void unpoison(const void* at, int64_t bytes) { ASAN_UNPOISON_MEMORY_REGION(at, static_cast<size_t>(bytes)); }
#else
constexpr int64_t kGuardHalves = 0;
inline void poison(const void*, int64_t) {}
inline void unpoison(const void*, int64_t) {}
#endif

// Sequences in pages of page_tokens positions. A page holds, for every layer, the keys then the values of each
// key/value head: [layer][k|v][kv_head][page_tokens][head_dim], as float16. The pool is one anonymous mapping of
// max_pages pages that reserves address space only: a page takes memory when it is first written, and a page given
// back is the next handed out, while it is still resident.
struct KvCache {
  struct Sequence {
    std::vector<uint16_t*> pages;
    int64_t length = 0;
  };

  const void* model = nullptr;  // the model whose keys and values these are
  int64_t layers = 0, kv_heads = 0, head_dim = 0;
  int64_t page_tokens = 0, max_pages = 0;
  int64_t page_halves = 0;  // float16 values in one page
  uint16_t* pool = nullptr;
  size_t pool_bytes = 0;
  int64_t fresh = 0;                // pages [0, fresh) of the pool have been handed out at least once
  std::vector<int64_t> free_pages;  // pages given back, handed out again last first; capacity >= fresh
  std::atomic<int64_t> in_use{0};   // read without the lock, as a metric, while a step runs
  std::unordered_map<int64_t, Sequence> sequences;
  int64_t next_id = 1;
  std::mutex mutex;  // sequences are made and freed from the caller's thread while no step runs, but be safe

  KvCache() = default;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;
  ~KvCache() {
    if (pool == nullptr) return;
    unpoison(pool, static_cast<int64_t>(pool_bytes));  // the address range may be mapped again for another use
    munmap(pool, pool_bytes);
  }

  // Map the pool. Returns kOk, kBadArgument for counts past any real cache, or kOutOfMemory.
  Status map_pool() {
    constexpr int64_t kMostPageTokens = int64_t{1} << 20;
    if (page_tokens <= 0 || page_tokens > kMostPageTokens || max_pages < 0) return kBadArgument;
    page_halves = layers * 2 * kv_heads * page_tokens * head_dim;  // under 2^57 within the model's own bounds
    int64_t bytes = 0;
    if (__builtin_mul_overflow(max_pages, (page_halves + kGuardHalves) * 2, &bytes)) return kBadArgument;
    if (bytes == 0) return kOk;
    void* mapped = mmap(nullptr, static_cast<size_t>(bytes), PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapped == MAP_FAILED) return kOutOfMemory;
    pool = static_cast<uint16_t*>(mapped);
    pool_bytes = static_cast<size_t>(bytes);
    poison(pool, bytes);
    return kOk;
  }

  int64_t used_pages() const { return in_use.load(std::memory_order_relaxed); }

  uint16_t* kv_at(uint16_t* page, int64_t layer, int64_t which, int64_t kv_head, int64_t slot) const {
    return page + (((layer * 2 + which) * kv_heads + kv_head) * page_tokens + slot) * head_dim;
  }

  // Give seq pages for tokens more positions, all or none.
  Status reserve(int64_t seq, int64_t tokens) {
    auto found = sequences.find(seq);
    if (found == sequences.end()) return kUnknownSequence;
    if (tokens < 0) return kBadArgument;
    if (tokens > max_pages * page_tokens) return kOutOfPages;
    auto& pages = found->second.pages;
    const int64_t wanted = (found->second.length + tokens + page_tokens - 1) / page_tokens;
    const int64_t more = wanted - static_cast<int64_t>(pages.size());
    if (more <= 0) return kOk;
    if (used_pages() + more > max_pages) return kOutOfPages;
    // Every allocation before any page is taken: a refusal leaves the books as they were.
    pages.reserve(static_cast<size_t>(wanted));
    const auto most_fresh = static_cast<size_t>(fresh + more);
    if (free_pages.capacity() < most_fresh) free_pages.reserve(std::max(most_fresh, 2 * free_pages.capacity()));
    for (int64_t i = 0; i < more; ++i) pages.push_back(take_page());
    return kOk;
  }

  // Forget positions past length, keeping their pages reserved (a step's drafted positions that were refused).
  Status rewind(int64_t seq, int64_t length) {
    auto found = sequences.find(seq);
    if (found == sequences.end()) return kUnknownSequence;
    if (length < 0 || length > found->second.length) return kBadArgument;
    found->second.length = length;
    return kOk;
  }

  // Forget positions past length, and give back the pages that the remaining positions do not need.
  Status truncate(int64_t seq, int64_t length) {
    auto found = sequences.find(seq);
    if (found == sequences.end()) return kUnknownSequence;
    Sequence& sequence = found->second;
    if (length < 0 || length > sequence.length) return kBadArgument;
    sequence.length = length;
    const auto keep = static_cast<size_t>((length + page_tokens - 1) / page_tokens);
    while (sequence.pages.size() > keep) {
      give_back(sequence.pages.back());
      sequence.pages.pop_back();
    }
    return kOk;
  }

  // Copy the first tokens positions of src into dst, which must be empty.
  Status copy(int64_t dst, int64_t src, int64_t tokens) {
    auto to = sequences.find(dst), from = sequences.find(src);
    if (to == sequences.end() || from == sequences.end()) return kUnknownSequence;
    if (dst == src || tokens < 0 || tokens > from->second.length) return kBadArgument;
    if (to->second.length != 0) return kNotEmpty;
    const Status reserved = reserve(dst, tokens);
    if (reserved != kOk) return reserved;
    for (int64_t p = 0; p * page_tokens < tokens; ++p)
      std::memcpy(to->second.pages[p], from->second.pages[p], static_cast<size_t>(page_halves) * 2);
    to->second.length = tokens;
    return kOk;
  }

  // Give back a sequence's pages and forget it.
  void release(int64_t seq) {
    auto found = sequences.find(seq);
    if (found == sequences.end()) return;
    for (uint16_t* page : found->second.pages) give_back(page);
    sequences.erase(found);
  }

 private:
  uint16_t* take_page() {
    int64_t index = fresh;
    if (free_pages.empty()) {
      ++fresh;
    } else {
      index = free_pages.back();
      free_pages.pop_back();
    }
    uint16_t* page = pool + index * (page_halves + kGuardHalves);
    unpoison(page, page_halves * 2);
    in_use.fetch_add(1, std::memory_order_relaxed);
    return page;
  }

  void give_back(uint16_t* page) {
    poison(page, page_halves * 2);
    free_pages.push_back((page - pool) / (page_halves + kGuardHalves));  // within capacity: never allocates
    in_use.fetch_sub(1, std::memory_order_relaxed);
  }
};

}  // namespace palaver
