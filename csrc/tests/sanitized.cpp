// Every C++ test and the native step they test, as one translation unit, built with AddressSanitizer and
// UndefinedBehaviorSanitizer (tests/engine/native/test_binding.py compiles and runs this). One unit instantiates and
// instruments each kernel template once: built as four units, each test recompiled the kernels it shares with the
// step, and the build took twice the CPU.
//
// The first argument names the test: "blocks", "int8", or "step" followed by the step's parts (none: all).

#include "../native_step.cpp"
#include "blocks_test.cpp"
#include "int8_test.cpp"
#include "native_step_test.cpp"

#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "blocks") == 0) return blocks_test::run();
  if (argc >= 2 && std::strcmp(argv[1], "int8") == 0) return int8_test::run();
  if (argc >= 2 && std::strcmp(argv[1], "step") == 0) return native_step_test::run(argc - 1, argv + 1);
  std::fprintf(stderr, "usage: %s blocks | int8 | step [part ...]\n", argv[0]);
  return 2;
}
