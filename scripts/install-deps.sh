#!/usr/bin/env bash
# Installs what dsv4 needs to build on a fresh Debian/Ubuntu machine: the compilers and libraries from Debian,
# clang + its runtime libraries (libFuzzer, sanitizers) + libomp for the sanitizer and fuzzing builds. The CUDA
# backend needs nvcc (CUDA toolkit 12.8+ / 13), which is not a Debian package: without it dsv4 builds CPU-only.
set -euo pipefail
pkgs=(cmake ninja-build g++ pkg-config nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev
      libpcre2-dev libutf8proc-dev libcpp-httplib-dev libopenblas-openmp-dev clang libclang-rt-14-dev libomp-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi
if ! command -v nvcc >/dev/null 2>&1; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then
    echo "note: nvcc found at /usr/local/cuda/bin (scripts/build.sh adds it to PATH)"
  else
    echo "note: no nvcc (CUDA toolkit 12.8+ / 13): dsv4 builds CPU-only (DSV4_CUDA=OFF, --device cpu only)"
  fi
fi
