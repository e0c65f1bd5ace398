#!/usr/bin/env bash
# Installs the build into a temporary prefix with `meson install`, checks
# that every public header and securememory.pc are installed, then compiles
# and runs the README example against the installed copy through pkg-config.
# Usage: test/install-check.sh BUILD_DIR
set -euo pipefail
build=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
root=$("$repo/test/install-into.sh" "$build" "$dest")
for header in "$repo"/include/securememory/*.h "$repo"/include/securememory/*.hpp; do
  if [ ! -f "$root/include/securememory/$(basename "$header")" ]; then
    echo "install-check: $(basename "$header") is not installed (add it to include/securememory/meson.build)"
    exit 1
  fi
done
pc=$(find "$root" -name securememory.pc | head -n 1)
test -n "$pc"
export PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR="$dest"
python3 "$repo/test/extract-example.py" "$repo/README.md" "$dest/example.cpp"
libdir=$(dirname "$(find "$root" -name 'libsecurememory.so' | head -n 1)")
# shellcheck disable=SC2046
g++ -std=c++20 "$dest/example.cpp" -o "$dest/example" $(pkg-config --cflags --libs securememory) -Wl,-rpath,"$libdir"
"$dest/example"
echo "install-check: OK ($pc)"
