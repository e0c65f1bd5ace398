// securememory: export macro for the shared library.
//
// The shared library is built with hidden symbol visibility; only items
// marked SECUREMEMORY_API are exported. Internal hooks (the lib/os/ fault
// injector) are therefore not reachable from a program that links the
// installed shared library.
#pragma once

#if defined(__GNUC__)
#define SECUREMEMORY_API __attribute__((visibility("default")))
#else
#define SECUREMEMORY_API
#endif
