// Paddle's CPU allocator hands large blocks back to the OS when they are freed, so a fresh
// gradient or saved tensor of tens of MB costs, on every call, a page fault and the kernel's
// zeroing of each page before the op writes it: a third of the op's time, and more when its
// threads fault in parallel. The op's large outputs therefore come from a small cache of
// buffers: a buffer is handed out again only once the cache holds its last reference, i.e. every
// tensor that shared it (the previous output, its views, a saved copy) is gone. Where the
// allocation of a tensor cannot be seen (Paddle 2.6 exposes no holder), nothing is cached.
//
// Limits: buffers of at least 1 MiB, at most kMaxBlocks of them and PADDLE_SSD_OP_CACHE_MB
// (default 1024; 0 turns the cache off) in all, idle ones evicted least recently used first.
#include "output_cache.h"

#include <sys/mman.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <utility>

#include "paddle/phi/core/dense_tensor.h"

namespace ssd_op {
namespace {

constexpr size_t kMinBytes = size_t{1} << 20;
constexpr size_t kMaxBlocks = 32;

size_t limit_bytes() {
  static const size_t limit = [] {
    const char* env = std::getenv("PADDLE_SSD_OP_CACHE_MB");
    const long long mb = env ? std::atoll(env) : 1024;
    return mb > 0 ? static_cast<size_t>(mb) << 20 : size_t{0};
  }();
  return limit;
}

struct Block {
  std::shared_ptr<phi::Allocation> holder;
  size_t bytes;  // as requested (the allocation may be larger)
  bool idle() const { return holder.use_count() == 1; }
};

struct Cache {
  std::mutex mutex;
  std::vector<Block> blocks;  // least recently handed out first
};

// Never destroyed: tensors holding cached buffers may outlive static destruction.
Cache& cache() {
  static Cache* instance = new Cache;
  return *instance;
}

// The allocation behind a dense tensor, where this Paddle exposes it (3.x), else null.
template <typename Dense>
auto holder_of(const Dense& dense, int) -> decltype(dense.Holder()) {
  return dense.Holder();
}
template <typename Dense>
std::shared_ptr<phi::Allocation> holder_of(const Dense&, long) {
  return nullptr;
}

// A new tensor. The kernel gives its first touch of each page a fault: with transparent huge
// pages that is one fault per 2 MiB instead of per 4 KiB (a no-op where they are off).
paddle::Tensor fresh(const std::vector<int64_t>& shape, paddle::DataType dtype, size_t bytes) {
  paddle::Tensor t = paddle::empty(shape, dtype, paddle::CPUPlace());
  constexpr uintptr_t kHugePage = uintptr_t{1} << 21;
  const auto begin = reinterpret_cast<uintptr_t>(t.data());
  const uintptr_t first = (begin + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t last = (begin + bytes) & ~(kHugePage - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  return t;
}

}  // namespace

paddle::Tensor host_output(const std::vector<int64_t>& shape, paddle::DataType dtype) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  const size_t bytes = static_cast<size_t>(numel) * phi::SizeOf(dtype);
  const size_t limit = limit_bytes();
  if (bytes < kMinBytes || bytes > limit) return fresh(shape, dtype, bytes);

  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  for (size_t k = 0; k < c.blocks.size(); ++k) {
    if (c.blocks[k].bytes != bytes || !c.blocks[k].idle()) continue;
    Block block = std::move(c.blocks[k]);
    c.blocks.erase(c.blocks.begin() + k);
    c.blocks.push_back(block);
    const phi::DenseTensorMeta meta(dtype, common::make_ddim(shape));
    return paddle::Tensor(std::make_shared<phi::DenseTensor>(block.holder, meta));
  }
  paddle::Tensor t = fresh(shape, dtype, bytes);
  const auto dense = std::dynamic_pointer_cast<phi::DenseTensor>(t.impl());
  std::shared_ptr<phi::Allocation> holder = dense ? holder_of(*dense, 0) : nullptr;
  if (!holder) return t;
  size_t total = bytes;
  for (const Block& b : c.blocks) total += b.bytes;
  for (auto it = c.blocks.begin(); it != c.blocks.end();) {
    if (total <= limit && c.blocks.size() < kMaxBlocks) break;
    if (it->idle()) {
      total -= it->bytes;
      it = c.blocks.erase(it);
    } else {
      ++it;
    }
  }
  if (total <= limit && c.blocks.size() < kMaxBlocks) c.blocks.push_back({holder, bytes});
  return t;
}

void release_idle_outputs() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  for (auto it = c.blocks.begin(); it != c.blocks.end();) {
    it = it->idle() ? c.blocks.erase(it) : it + 1;
  }
}

}  // namespace ssd_op
