// The C++ tests' one assertion: report a failed condition with its place, count it, and go on.
#pragma once

#include <cstdio>

namespace palaver_test {
inline int failures = 0;
}  // namespace palaver_test

#define CHECK(condition)                                                            \
  do {                                                                              \
    if (!(condition)) {                                                             \
      std::fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #condition);   \
      ++palaver_test::failures;                                                     \
    }                                                                               \
  } while (0)
