#!/usr/bin/env bash
# Installs a build with `meson install` into DESTDIR=DEST and prints the
# installed prefix inside it (DEST + the build's prefix option).
# Usage: test/install-into.sh BUILD_DIR DEST
set -euo pipefail
build=$1
dest=$2
DESTDIR="$dest" meson install -C "$build" --quiet >/dev/null
prefix=$(meson introspect "$build" --buildoptions | python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"))')
echo "$dest$prefix"
