#!/usr/bin/env bash
# Installs the build into a temporary prefix with `meson install`, then
# configures, builds and runs test/cmake-consumer (a C++ and a C program)
# against the installed copy through find_package(securememory CONFIG).
# Usage: test/cmake-consumer/run.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$("$repo/test/install-into.sh" "$build" "$work/dest")
config=$(find "$root" -name securememoryConfig.cmake | head -n 1)
if [ -z "$config" ] || [ ! -f "$(dirname "$config")/securememoryConfigVersion.cmake" ]; then
  echo "cmake-consumer: securememoryConfig.cmake or its version file is not installed (is cmake installed?)"
  exit 1
fi
cmake -S "$repo/test/cmake-consumer" -B "$work/build" -DCMAKE_PREFIX_PATH="$root" -DCMAKE_BUILD_TYPE=Release
cmake --build "$work/build" -j 2
(cd "$work/build" && ctest --output-on-failure)
echo "cmake-consumer: OK ($config)"
