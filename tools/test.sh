#!/usr/bin/env bash
# The README's test command: `cargo test` for the workspace (engine and kernels), after making
# sure wgpu finds a Vulkan driver. The kernels' parity tests and the kernel-path golden tests run
# on wgpu; on a machine without a GPU driver that is lavapipe, Mesa's software Vulkan (Debian
# packages mesa-vulkan-drivers and libvulkan1), installed here when missing so that a fresh
# machine with only a Rust toolchain passes. Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Vulkan loader, and lavapipe's driver manifest for this machine's architecture.
vulkan_ready() {
  PATH="$PATH:/sbin:/usr/sbin" ldconfig -p | grep -q 'libvulkan\.so\.1' &&
    [ -e "/usr/share/vulkan/icd.d/lvp_icd.$(uname -m).json" ]
}

if [ "$(uname -s)" = Linux ] && ! vulkan_ready; then
  if command -v apt-get >/dev/null; then
    echo "tools/test.sh: installing lavapipe (mesa-vulkan-drivers, libvulkan1) for the wgpu tests" >&2
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers libvulkan1
  else
    # Not Debian: wgpu may still find another driver; if not, its tests say "No possible adapter".
    echo "tools/test.sh: no lavapipe and no apt-get; install Mesa's Vulkan drivers if the wgpu tests find no adapter" >&2
  fi
fi

# The real Qwen3 and Llama 3.1 tokenizers for the chat-template tests (downloaded once).
tools/fetch_tokenizers.sh

exec cargo test --locked "$@"
