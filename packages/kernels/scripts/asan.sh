#!/usr/bin/env bash
# Runs the kernels test suite (and @lowbit/tensor's, when that package exists) against an
# AddressSanitizer build of the addon.
#
#   packages/kernels/scripts/asan.sh [vitest args...]     e.g.  scripts/asan.sh test/core.test.ts
#
# - Builds with -fsanitize=address -fno-omit-frame-pointer into build-asan/ (the normal build/ is left
#   alone), CPU only unless LOWBIT_CUDA=1 is set (cudart and ASan need protect_shadow_gap=0 together).
# - Node itself is not instrumented, so libasan is LD_PRELOADed to come first in the process.
# - detect_leaks=0: V8 keeps allocations until exit on purpose, so leak reports would be noise; ASan
#   still stops at the first heap overflow, use-after-free or double free in the addon.
# - The tests pick the ASan build through LOWBIT_KERNELS_PATH (read by src/loader.ts).
# Exit status: non-zero when the build fails, ASan reports an error, or a test fails.
set -euo pipefail

package_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$package_dir"

LOWBIT_BUILD_DIR=build-asan LOWBIT_SANITIZE=address LOWBIT_CUDA="${LOWBIT_CUDA:-0}" node scripts/build-native.mjs

libasan="$("${CXX:-c++}" -print-file-name=libasan.so)"
if [[ ! -e "$libasan" ]]; then
  echo "asan.sh: libasan.so was not found next to ${CXX:-c++} (install the compiler's ASan runtime, e.g. libasan8)." >&2
  exit 1
fi

export LOWBIT_KERNELS_PATH="$package_dir/build-asan/Release/lowbit_kernels.node"
export LD_PRELOAD="$libasan${LD_PRELOAD:+:$LD_PRELOAD}"
asan_options="detect_leaks=0:halt_on_error=1:abort_on_error=1:print_summary=1"
if [[ "${LOWBIT_CUDA:-0}" == "1" ]]; then asan_options="$asan_options:protect_shadow_gap=0"; fi
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}$asan_options"

echo "asan.sh: @lowbit/kernels tests against $LOWBIT_KERNELS_PATH"
node_modules/.bin/vitest run "$@"

tensor_dir="$package_dir/../tensor"
if [[ $# -eq 0 && -f "$tensor_dir/package.json" && -x "$tensor_dir/node_modules/.bin/vitest" ]]; then
  echo "asan.sh: @lowbit/tensor tests against the same build"
  (cd "$tensor_dir" && node_modules/.bin/vitest run)
fi
echo "asan.sh: clean (no AddressSanitizer reports, all tests passed)"
