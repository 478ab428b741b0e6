#!/usr/bin/env bash
# Makes build-vks-carry/, the kit tools/vulkan_device_run.sh needs on the GPU machine (which has
# no Debian packages for Vulkan development and no network): the Vulkan loader and GL vendor
# libraries as .debs, and kit.tar.gz holding glslangValidator, the Vulkan C headers and the
# Khronos validation layer (stripped and compressed: the working tree and what is carried must
# stay under the device's 64 MiB), taken from this machine's Debian packages. Then, with the
# `device` tool:
#   run(command="bash tools/vulkan_device_run.sh", carry=["build-vks-carry"])
set -euo pipefail
cd "$(dirname "$0")/.."
C=build-vks-carry
K=$(mktemp -d)
rm -rf "$C" && mkdir -p "$C/gl" "$K/bin" "$K/include" "$K/layer" /tmp/ela-vk-lists
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/ela-vk-lists'
apt-get $o update -q
(cd "$C/gl" && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
tmp=$(mktemp -d)
(cd "$tmp" && apt-get $o download glslang-tools libvulkan-dev vulkan-validationlayers)
for f in "$tmp"/*.deb; do dpkg -x "$f" "$tmp/root"; done
cp "$tmp/root/usr/bin/glslangValidator" "$K/bin/"
cp -r "$tmp/root/usr/include/vulkan" "$tmp/root/usr/include/vk_video" "$K/include/" 2>/dev/null || \
  cp -r "$tmp/root/usr/include/vulkan" "$K/include/"
find "$K/include" -name '*.hpp' -delete # C++ bindings: ela is C
cp "$tmp"/root/usr/lib/x86_64-linux-gnu/libVkLayer_khronos_validation.so "$K/layer/"
cp "$tmp"/root/usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json "$K/layer/"
strip --strip-unneeded "$K/bin/glslangValidator" "$K/layer/libVkLayer_khronos_validation.so"
tar -C "$K" -czf "$C/kit.tar.gz" .
rm -rf "$tmp" "$K"
echo "vulkan_device_kit: $C ready ($(du -sh "$C" | cut -f1))"
