#!/usr/bin/env bash
# Installs what dsv4 needs to build on a fresh Debian/Ubuntu machine (nvcc is expected on the machine).
set -euo pipefail
pkgs=(cmake ninja-build g++ pkg-config nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev
      libpcre2-dev libutf8proc-dev libcpp-httplib-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi
if ! command -v nvcc >/dev/null 2>&1; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then
    echo "note: nvcc found at /usr/local/cuda/bin (add it to PATH)"
  else
    echo "error: nvcc (CUDA toolkit 12.8+ / 13) is required to build dsv4's CUDA code" >&2
    exit 1
  fi
fi
