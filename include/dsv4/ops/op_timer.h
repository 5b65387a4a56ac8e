// Device time of the attention core's ops (the lightning indexer, attention), for benchmarks: the prefill
// time split into indexer / attention / the rest.
//
// While timing is on, every CUDA indexer_topk / attention call outside stream capture is bracketed by events on
// its stream (a graph being captured is skipped: its replays are not timed). CPU calls are not timed. One
// timing at a time per process; not for use by concurrent engines.
#pragma once

namespace dsv4::ops {

struct OpTimes {
  double indexer_seconds = 0, attention_seconds = 0;
  long calls = 0;
};

void start_op_timing();
// Waits for the timed work, stops timing and returns the sums since start_op_timing().
OpTimes stop_op_timing();

}  // namespace dsv4::ops
