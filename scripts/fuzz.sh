#!/usr/bin/env bash
# Runs every libFuzzer target (fuzz/) for SECONDS each (default 600) from its committed seed corpus, in the
# sanitizer build (scripts/build_sanitize.sh, built if missing). New inputs go to build-san/fuzz/<target>/corpus
# (the committed seeds stay as they are); crashes to build-san/fuzz/<target>/. Prints one summary line per
# target (runs, executions per second, coverage) and exits non-zero when any target found a crash.
#   scripts/fuzz.sh [SECONDS] [TARGET...]      e.g. scripts/fuzz.sh 20      scripts/fuzz.sh 600 config
# DSV4_FUZZ_SEED fixes libFuzzer's random seed (the test command uses 1, so a CI run explores the same inputs
# each time and a red run reproduces); unset or 0, libFuzzer picks one (long exploratory runs).
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors index config tokenizer http_request output_parsers)
[ -x build-san/fuzz/fuzz_config ] || scripts/build_sanitize.sh
source scripts/sanitize_env.sh
status=0
for t in "${targets[@]}"; do
  work="build-san/fuzz/$t"
  mkdir -p "$work/corpus"
  log="$work/fuzz.log"
  # -rss_limit_mb: the tokenizer target loads a 400 kB tokenizer per input; -timeout: a hang is a finding.
  "build-san/fuzz/fuzz_$t" -max_total_time="$seconds" -seed="${DSV4_FUZZ_SEED:-0}" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$work/" "$work/corpus" "fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1)
  printf 'fuzz_%-12s %4ss  runs %-10s exec/s %-7s %s  exit %s\n' "$t" "$seconds" "${runs:-?}" "${eps:-?}" "${cov:-?}" "$rc"
  if [ "$rc" -ne 0 ]; then
    status=1
    echo "---- fuzz_$t failed (log: $log) ----" >&2
    tail -40 "$log" >&2
  fi
done
exit $status
