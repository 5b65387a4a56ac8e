// GPU tests build everywhere and skip with a message when no CUDA device is present (CI).
#pragma once

#include <gtest/gtest.h>

#include "dsv4/backend/cuda_device.h"

#define DSV4_REQUIRE_GPU()                                                       \
  do {                                                                           \
    const std::string dsv4_why_ = ::dsv4::cuda::unavailable_reason();           \
    if (!dsv4_why_.empty()) GTEST_SKIP() << "GPU test skipped: " << dsv4_why_;   \
  } while (0)
