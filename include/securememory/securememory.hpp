// securememory: umbrella header.
//
// Keeps secrets (keys, tokens) in memory that is locked (never swapped),
// excluded from core dumps, unreadable except inside Secret::with_bytes, and
// wiped when released. See README.md and docs/.
#pragma once

#include <securememory/backend.hpp>
#include <securememory/buffer.hpp>
#include <securememory/error.hpp>
#include <securememory/guarantees.hpp>
#include <securememory/harden.hpp>
#include <securememory/log.hpp>
#include <securememory/metrics.hpp>
#include <securememory/page_cache.hpp>
#include <securememory/purge.hpp>
#include <securememory/registry.hpp>
#include <securememory/secret.hpp>
#include <securememory/version.hpp>
#include <securememory/violation.hpp>
#include <securememory/violation_kind.hpp>
