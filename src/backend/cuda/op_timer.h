// CUDA side of ops/op_timer.h: events around the timed ops.
#pragma once

#include "dsv4/core/exec_context.h"
#include "dsv4/ops/op_timer.h"

namespace dsv4::cuda {

enum class TimedOp { kIndexer = 0, kAttention = 1 };

void op_timing_start();
ops::OpTimes op_timing_stop();
// Brackets one op on ctx's stream; no-ops while timing is off or the stream is capturing.
void op_timing_begin(ExecContext& ctx, TimedOp op);
void op_timing_end(ExecContext& ctx, TimedOp op);

}  // namespace dsv4::cuda
