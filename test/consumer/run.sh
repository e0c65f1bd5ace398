#!/usr/bin/env bash
# Builds test/consumer as a separate Meson project that pulls this
# repository in as the subproject "securememory", then runs its test.
# Usage: test/consumer/run.sh [workdir]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$(mktemp -d)}
rm -rf "$work/consumer"
mkdir -p "$work/consumer/subprojects"
cp "$repo/test/consumer/meson.build" "$repo/test/consumer/consumer.cpp" "$work/consumer/"
# A clean copy of the tracked files: what a consumer's checkout would have.
mkdir -p "$work/consumer/subprojects/securememory"
git -C "$repo" ls-files -z | (cd "$repo" && xargs -0 cp --parents -t "$work/consumer/subprojects/securememory/")
meson setup "$work/consumer/build" "$work/consumer" --wrap-mode=nodownload
meson test -C "$work/consumer/build" --print-errorlogs
