// The envelope workload benchmarks (bench/envelope-bench.cpp), registered by
// bench/bench.cpp's main().
#pragma once

#include <string>

namespace envelope_bench {

/// envelope/<backend>/encrypt and envelope/<backend>/decrypt, at 1, 2 and 4
/// threads.
void register_backend(const std::string& backend);

/// baseline/envelope/encrypt and baseline/envelope/decrypt: the same crypto
/// with the keys in ordinary memory, at 1, 2 and 4 threads.
void register_baseline();

/// Closes every secret the envelope benchmarks hold (call before exit).
void release();

}  // namespace envelope_bench
