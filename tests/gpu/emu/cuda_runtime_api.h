// Emulated CUDA runtime for tests/gpu/emu (see cuda_emu.h).
#pragma once
#include "cuda_emu.h"
