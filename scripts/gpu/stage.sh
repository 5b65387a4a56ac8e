#!/usr/bin/env bash
# Stages what a GPU run needs into one archive small enough to carry to the GPU machine: the build's programs
# and libraries (debug info stripped), the scripts that drive them (tools/reference, tools/profile, the kernel
# lab, this folder) and env.sh (PATH and LD_LIBRARY_PATH). Test fixtures and models are not staged: the runner reads
# them from the checkout the GPU call sends (DSV4_SOURCE_DIR).
#   scripts/gpu/stage.sh [BUILD_DIR (build)] [DEST (.gpu-stage)]   ->  DEST/stage.tar.xz
# STAGE_LEAN=1 leaves out what a verification call seldom needs — dsv4_unit_tests (CPU tests), the probes, the GEMV
# labs, the kernel tracer and its CUPTI — for calls that carry a second library beside the stage (stage-lib.sh): the
# GPU call carries at most 64 MiB, the tracked tree included (~52 MB in December 2026).
# On the GPU machine:  cd DEST && tar xJf stage.tar.xz && bash scripts/gpu/run.sh SUITES   (see run.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
dest=${2:-.gpu-stage}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/lib" "$tmp/tools" "$tmp/bench" "$tmp/scripts"
lean=${STAGE_LEAN:-0}
for f in "$build/dsv4" "$build/tests/dsv4_gpu_tests" "$build/tests/dsv4_unit_tests" "$build"/bench/bench_* "$build"/bench/probe_*; do
  case "$lean:$(basename "$f")" in
    1:dsv4_unit_tests | 1:probe_* | 1:bench_gemv | 1:bench_quant_gemv) continue ;;
  esac
  [ -x "$f" ] && cp "$f" "$tmp/bin/"
done
find "$build" -maxdepth 2 -name 'lib*.so' ! -path '*/CMakeFiles/*' -exec cp {} "$tmp/lib/" \;
# Debian's cpp-httplib is a shared library that the GPU machine may lack: the server library's copy goes along.
for so in "$tmp"/lib/libdsv4_server*.so; do
  [ -f "$so" ] || continue
  ldd "$so" | awk '/libcpp-httplib/ {print $3}' | while read -r dep; do [ -f "$dep" ] && cp -L "$dep" "$tmp/lib/"; done
done
# The kernel timeline tracer (tools/profile/kernel_trace.cc, LD_PRELOAD; host code on CUPTI) and the CUPTI it links,
# where the toolkit has them.
cuda=${CUDA_HOME:-/usr/local/cuda}
if [ "$lean" != 1 ] && [ -f "$cuda/include/cupti.h" ]; then
  cupti_dir=$(dirname "$(readlink -f "$(ls "$cuda"/lib*/libcupti.so "$cuda"/extras/CUPTI/lib64/libcupti.so 2>/dev/null | head -1)")")
  g++ -O2 -fPIC -shared -std=c++17 -Wall -Wextra -I"$cuda/include" tools/profile/kernel_trace.cc \
    -o "$tmp/lib/libdsv4_kernel_trace.so" -L"$cupti_dir" -lcupti
  cp -L "$cupti_dir"/libcupti.so.[0-9]* "$tmp/lib/" 2>/dev/null || true
fi
strip --strip-debug "$tmp"/bin/* "$tmp"/lib/*
cp -r tools/reference tools/profile "$tmp/tools/"
cp -r bench/kernels bench/make_prompts.py "$tmp/bench/"
cp -r scripts/gpu "$tmp/scripts/"
# DSV4_LIB=DIR puts a candidate libdsv4.so (a thin stage of scripts/gpu/stage-lib.sh) before the stage's own, so every
# suite runs on it (a plain LD_LIBRARY_PATH is placed after the stage's lib: it does not override it).
cat >"$tmp/env.sh" <<'EOT'
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PATH="$here/bin:$PATH" LD_LIBRARY_PATH="${DSV4_LIB:+$DSV4_LIB:}$here/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
EOT
mkdir -p "$dest"
# A destination inside the checkout is kept out of git (the GPU call sends the working tree); one elsewhere is not.
if [[ $dest != /* ]]; then
  exclude="$(git rev-parse --git-common-dir)/info/exclude"
  grep -qx "/$dest/" "$exclude" 2>/dev/null || echo "/$dest/" >>"$exclude"
fi
tar -C "$tmp" -cf - . | xz -T2 -6 >"$dest/stage.tar.xz"
echo "staged $(ls "$tmp/bin" | wc -l) programs, $(ls "$tmp/lib" | wc -l) libraries: $(du -h "$dest/stage.tar.xz" | cut -f1) in $dest/stage.tar.xz"
