// torch's CPU allocator with a cache of large blocks, installed in place of the default one.
//
// Blocks of at least min_bytes are mapped with mmap, rounded up to a size class (eighths of a
// power of two), and kept when freed; a request takes a free block of its class, or of a larger
// class up to kMaxWaste times its size. Only a miss maps new pages, and before it does, free
// blocks are unmapped until the mapped total fits within the largest total ever in use at once,
// plus a quarter.
// A training step that frees and allocates the same feature maps every step then reuses its
// pages (no page faults), and holds about its peak in use, not the peak plus the gaps that
// glibc's heap leaves between maps of different sizes. Smaller blocks go to the allocator that
// was installed before.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

constexpr size_t kMaxWaste = 8;  // a free block serves requests down to an eighth of its size
// Mapped memory may exceed the peak in use by 1/kSlack before idle blocks are unmapped. Without
// a margin, phases of a step that need different sizes take each other's blocks every step
// (measured on the protocol model at batch 32: 14 blocks unmapped and mapped again per step).
constexpr size_t kSlack = 4;
constexpr size_t kPage = 4096;

struct Stats {
  size_t mapped = 0, peak_mapped = 0, in_use = 0, peak_in_use = 0, hits = 0, misses = 0, unmapped = 0;
};

class LargeBlockCache final : public c10::Allocator {
 public:
  LargeBlockCache(c10::Allocator* fallback, size_t min_bytes) : fallback_(fallback), min_bytes_(min_bytes) {}

  c10::DataPtr allocate(size_t n) override {
    if (n < min_bytes_) return fallback_->allocate(n);
    const size_t size = size_class(n);
    void* block = take_or_make_room(size);
    if (block == nullptr) block = map_block(size);
    return {block, block, &release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  Stats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  static LargeBlockCache* instance;

 private:
  static void release(void* block) { instance->give_back(block); }

  static size_t size_class(size_t n) {
    const size_t top = size_t(1) << (63 - __builtin_clzll(n));
    const size_t step = std::max(top / 8, kPage);
    return (n + step - 1) / step * step;
  }

  // A free block of size..kMaxWaste*size, or null after unmapping free blocks to make room.
  void* take_or_make_room(size_t size) {
    std::vector<std::pair<void*, size_t>> unmap;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto fit = free_.lower_bound(size);
      if (fit != free_.end() && fit->first <= kMaxWaste * size) {
        void* block = fit->second.back();
        fit->second.pop_back();
        const size_t got = fit->first;
        if (fit->second.empty()) free_.erase(fit);
        stats_.hits++;
        note_in_use(got);
        return block;
      }
      stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use + size);
      const size_t budget = stats_.peak_in_use + stats_.peak_in_use / kSlack;
      unmap = take_free_blocks_while([&] { return stats_.mapped + size > budget; });
    }
    for (auto& [block, bytes] : unmap) munmap(block, bytes);
    return nullptr;
  }

  // Removes the largest free blocks from the cache while more_needed() (call with the lock
  // held); the caller unmaps them after releasing it.
  template <typename Predicate>
  std::vector<std::pair<void*, size_t>> take_free_blocks_while(Predicate more_needed) {
    std::vector<std::pair<void*, size_t>> taken;
    while (!free_.empty() && more_needed()) {
      auto largest = std::prev(free_.end());
      void* block = largest->second.back();
      largest->second.pop_back();
      taken.emplace_back(block, largest->first);
      sizes_.erase(block);
      stats_.mapped -= largest->first;
      stats_.unmapped++;
      if (largest->second.empty()) free_.erase(largest);
    }
    return taken;
  }

  void unmap_all_free_blocks() {
    std::vector<std::pair<void*, size_t>> unmap;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      unmap = take_free_blocks_while([] { return true; });
    }
    for (auto& [block, bytes] : unmap) munmap(block, bytes);
  }

  void* map_block(size_t size) {
    void* block = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (block == MAP_FAILED) {  // out of memory: give back every idle block and try once more
      unmap_all_free_blocks();
      block = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    TORCH_CHECK(block != MAP_FAILED, "not enough memory: you tried to allocate ", size,
                " bytes (iresnet's large-block cache; IRESNET_NATIVE=0 turns it off)");
    std::lock_guard<std::mutex> lock(mutex_);
    sizes_[block] = size;
    stats_.mapped += size;
    stats_.peak_mapped = std::max(stats_.peak_mapped, stats_.mapped);
    stats_.misses++;
    note_in_use(size);
    return block;
  }

  void note_in_use(size_t size) {
    stats_.in_use += size;
    stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
  }

  void give_back(void* block) {
    std::unique_lock<std::mutex> lock(mutex_);
    auto it = sizes_.find(block);
    if (it == sizes_.end()) {  // raw_deallocate of a small block
      lock.unlock();
      fallback_->raw_deleter()(block);
      return;
    }
    free_[it->second].push_back(block);
    stats_.in_use -= it->second;
  }

  c10::Allocator* const fallback_;
  const size_t min_bytes_;
  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;  // size -> free blocks of that size
  std::unordered_map<void*, size_t> sizes_;    // every mapped block -> its size
  Stats stats_;
};

LargeBlockCache* LargeBlockCache::instance = nullptr;

}  // namespace

// Installs the cache (once per process; it is never removed: freed tensors may come back to it
// at any time). Returns 1 if this call installed it, 0 if it was installed already.
extern "C" int iresnet_install_large_block_cache(size_t min_bytes) {
  if (LargeBlockCache::instance != nullptr) return 0;
  LargeBlockCache::instance = new LargeBlockCache(c10::GetCPUAllocator(), min_bytes);
  c10::SetCPUAllocator(LargeBlockCache::instance, /*priority=*/UINT8_MAX);
  return 1;
}

// mapped, peak_mapped, in_use, peak_in_use (bytes), hits, misses, unmapped (blocks) into out;
// returns 0 (and writes nothing) if the cache is not installed.
extern "C" int iresnet_large_block_cache_stats(size_t* out) {
  if (LargeBlockCache::instance == nullptr) return 0;
  const Stats s = LargeBlockCache::instance->stats();
  const size_t values[] = {s.mapped, s.peak_mapped, s.in_use, s.peak_in_use, s.hits, s.misses, s.unmapped};
  std::copy(std::begin(values), std::end(values), out);
  return 1;
}
