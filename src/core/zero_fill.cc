// Zeroing of large output blocks with streaming (non-temporal) stores where the CPU has them:
// about twice the speed of memset on blocks far larger than the cache, which would otherwise be
// read in before being overwritten.
#include <algorithm>
#include <cstdint>

#include "cpu_kernels.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace ssd_loss {
namespace cpu {

template <typename T>
void zero_fill(T* x, int64_t n) {
#if defined(__SSE2__)
  char* p = reinterpret_cast<char*>(x);
  char* const end = p + n * static_cast<int64_t>(sizeof(T));
  char* const aligned =
      reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(p) + 15) & ~uintptr_t{15});
  if (end - aligned >= 64) {
    std::fill(p, aligned, char(0));
    const __m128i zero = _mm_setzero_si128();
    char* q = aligned;
    for (; q + 64 <= end; q += 64) {
      _mm_stream_si128(reinterpret_cast<__m128i*>(q), zero);
      _mm_stream_si128(reinterpret_cast<__m128i*>(q + 16), zero);
      _mm_stream_si128(reinterpret_cast<__m128i*>(q + 32), zero);
      _mm_stream_si128(reinterpret_cast<__m128i*>(q + 48), zero);
    }
    std::fill(q, end, char(0));
    _mm_sfence();  // order the streaming stores before the values written next
    return;
  }
#endif
  std::fill(x, x + n, T(0));
}

template void zero_fill<float>(float*, int64_t);
template void zero_fill<double>(double*, int64_t);

}  // namespace cpu
}  // namespace ssd_loss
