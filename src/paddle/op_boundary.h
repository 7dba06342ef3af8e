// The op's exception boundary: whatever a kernel throws leaves it as Paddle's own error type, which
// every mode (dygraph, PIR and legacy executors) turns into a Python exception. Another C++
// exception type is not translated everywhere: in some executors it ends the process.
#pragma once

#include <exception>
#include <new>
#include <typeinfo>

#include "paddle/phi/core/enforce.h"

namespace ssd_op {

// The type PADDLE_THROW throws in this Paddle (phi::enforce:: in 2.6, common::enforce:: in 3.x).
inline const std::type_info& paddle_error_type() {
  static const std::type_info& type = []() -> const std::type_info& {
    try {
      PADDLE_THROW(phi::errors::Fatal("probe"));
    } catch (const std::exception& e) {
      return typeid(e);
    }
    return typeid(void);
  }();
  return type;
}

// Runs body() and rethrows anything it throws as a Paddle error naming `op`: std::bad_alloc as
// ResourceExhausted (Python's MemoryError), any other exception as External (OSError).
template <typename Body>
auto at_op_boundary(const char* op, Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    PADDLE_THROW(phi::errors::ResourceExhausted(
        "%s: out of host memory for the op's workspace or outputs (std::bad_alloc)", op));
  } catch (const std::exception& e) {
    if (typeid(e) == paddle_error_type()) throw;
    PADDLE_THROW(phi::errors::External("%s: %s", op, e.what()));
  } catch (...) {
    PADDLE_THROW(phi::errors::External("%s: an unknown C++ exception", op));
  }
}

}  // namespace ssd_op
