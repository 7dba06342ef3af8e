// Host tensors for the op's outputs, the large ones reused across calls (see output_cache.cc).
#pragma once

#include <cstdint>
#include <vector>

#include "paddle/extension.h"

namespace ssd_op {

// An uninitialized CPU tensor of that shape and dtype; the caller writes every element.
paddle::Tensor host_output(const std::vector<int64_t>& shape, paddle::DataType dtype);

// Frees the cached buffers no tensor uses any more.
void release_idle_outputs();

}  // namespace ssd_op
