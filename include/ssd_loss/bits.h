// Bit-level views of floats, on the host and on CUDA devices.
#pragma once

#include <cstdint>
#include <cstring>

#include "ssd_loss/platform.h"

namespace ssd_loss {

// The bits of `x` as a `To` of the same size (also for GCC vector types). memcpy is how C++14
// spells it without UB; compilers turn it into a register move on the host and on CUDA.
template <typename To, typename From>
SSD_HOST_DEVICE To bit_cast(const From& x) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast needs types of one size");
  To to;
  std::memcpy(&to, &x, sizeof to);
  return to;
}

SSD_HOST_DEVICE uint32_t float_bits(float x) { return bit_cast<uint32_t>(x); }

}  // namespace ssd_loss
