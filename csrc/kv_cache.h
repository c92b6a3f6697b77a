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
constexpr int64_t kGuardBytes = 64;
inline void poison(const void* at, int64_t bytes) { ASAN_POISON_MEMORY_REGION(at, static_cast<size_t>(bytes)); }
inline void unpoison(const void* at, int64_t bytes) { ASAN_UNPOISON_MEMORY_REGION(at, static_cast<size_t>(bytes)); }
#else
constexpr int64_t kGuardBytes = 0;
inline void poison(const void*, int64_t) {}
inline void unpoison(const void*, int64_t) {}
#endif

// How a cache holds one head's key or value at one position (pv_cache_new's kv_type).
enum KvType : int64_t {
  kKvF16 = 0,   // head_dim float16 values
  kKvQ8_0 = 1,  // a float16 scale for every 32 values (the last block may be shorter), then head_dim int8 values
};

// The bytes one head's key or value takes at one position.
inline int64_t kv_vector_bytes(int64_t type, int64_t head_dim) {
  return type == kKvQ8_0 ? (head_dim + 31) / 32 * 2 + head_dim : head_dim * 2;
}

// Sequences in pages of page_tokens positions. A page holds, for every layer, the keys then the values of each
// key/value head: [layer][k|v][kv_head][page_tokens][vector_bytes], each vector as kv_type says. The pool is one
// anonymous mapping of max_pages pages that reserves address space only: a page takes memory when it is first
// written, and a page given back is the next handed out, while it is still resident.
struct KvCache {
  struct Sequence {
    std::vector<uint8_t*> pages;
    int64_t length = 0;
  };

  const void* model = nullptr;  // the model whose keys and values these are
  int64_t layers = 0, kv_heads = 0, head_dim = 0;
  int64_t kv_type = kKvF16, vector_bytes = 0;
  int64_t page_tokens = 0, max_pages = 0;
  int64_t page_bytes = 0;
  uint8_t* pool = nullptr;
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

  // Map the pool. Returns kOk, kBadArgument for counts or a type past any real cache, or kOutOfMemory.
  Status map_pool() {
    constexpr int64_t kMostPageTokens = int64_t{1} << 20;
    if (page_tokens <= 0 || page_tokens > kMostPageTokens || max_pages < 0) return kBadArgument;
    if (kv_type != kKvF16 && kv_type != kKvQ8_0) return kBadArgument;
    vector_bytes = kv_vector_bytes(kv_type, head_dim);
    page_bytes = layers * 2 * kv_heads * page_tokens * vector_bytes;  // under 2^58 within the model's own bounds
    int64_t bytes = 0;
    if (__builtin_mul_overflow(max_pages, page_bytes + kGuardBytes, &bytes)) return kBadArgument;
    if (bytes == 0) return kOk;
    void* mapped = mmap(nullptr, static_cast<size_t>(bytes), PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapped == MAP_FAILED) return kOutOfMemory;
    pool = static_cast<uint8_t*>(mapped);
    pool_bytes = static_cast<size_t>(bytes);
    poison(pool, bytes);
    return kOk;
  }

  int64_t used_pages() const { return in_use.load(std::memory_order_relaxed); }

  uint8_t* kv_at(uint8_t* page, int64_t layer, int64_t which, int64_t kv_head, int64_t slot) const {
    return page + (((layer * 2 + which) * kv_heads + kv_head) * page_tokens + slot) * vector_bytes;
  }

  // The bytes that tokens positions take outside the pages (pv_seq_export's format).
  int64_t exported_bytes(int64_t tokens) const { return tokens * layers * 2 * kv_heads * vector_bytes; }

  // Copy the first tokens positions of seq's pages to out, or from in into seq's pages (which must already hold
  // room for them), as [page][layer][k|v][kv_head][position in the page][vector]: only the positions themselves,
  // never what an earlier sequence left in the rest of a page.
  Status exchange(int64_t seq, int64_t tokens, uint8_t* out, const uint8_t* in) {
    auto found = sequences.find(seq);
    if (found == sequences.end()) return kUnknownSequence;
    const auto& pages = found->second.pages;
    if (tokens < 0 || tokens > static_cast<int64_t>(pages.size()) * page_tokens) return kBadArgument;
    if (out != nullptr && tokens > found->second.length) return kBadArgument;
    int64_t offset = 0;
    for (int64_t p = 0; p * page_tokens < tokens; ++p) {
      const int64_t bytes = std::min(page_tokens, tokens - p * page_tokens) * vector_bytes;
      for (int64_t layer = 0; layer < layers; ++layer)
        for (int64_t which = 0; which < 2; ++which)
          for (int64_t g = 0; g < kv_heads; ++g, offset += bytes) {
            uint8_t* at = kv_at(pages[static_cast<size_t>(p)], layer, which, g, 0);
            if (out != nullptr)
              std::memcpy(out + offset, at, static_cast<size_t>(bytes));
            else
              std::memcpy(at, in + offset, static_cast<size_t>(bytes));
          }
    }
    return kOk;
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
      std::memcpy(to->second.pages[p], from->second.pages[p], static_cast<size_t>(page_bytes));
    to->second.length = tokens;
    return kOk;
  }

  // Give back a sequence's pages and forget it.
  void release(int64_t seq) {
    auto found = sequences.find(seq);
    if (found == sequences.end()) return;
    for (uint8_t* page : found->second.pages) give_back(page);
    sequences.erase(found);
  }

 private:
  uint8_t* take_page() {
    int64_t index = fresh;
    if (free_pages.empty()) {
      ++fresh;
    } else {
      index = free_pages.back();
      free_pages.pop_back();
    }
    uint8_t* page = pool + index * (page_bytes + kGuardBytes);
    unpoison(page, page_bytes);
    in_use.fetch_add(1, std::memory_order_relaxed);
    return page;
  }

  void give_back(uint8_t* page) {
    poison(page, page_bytes);
    free_pages.push_back((page - pool) / (page_bytes + kGuardBytes));  // within capacity: never allocates
    in_use.fetch_sub(1, std::memory_order_relaxed);
  }
};

}  // namespace palaver
