/*
 * Shared by the libFuzzer harnesses: FUZZ_CHECK(cond, ...) reports a broken property
 * and aborts, which libFuzzer records as a crash with the input that caused it.
 */
#ifndef HVD_FUZZ_CHECK_H
#define HVD_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond, ...)                                                          \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "%s:%d: property failed: %s: ", __FILE__, __LINE__, #cond);     \
      fprintf(stderr, __VA_ARGS__);                                                    \
      fputc('\n', stderr);                                                             \
      abort();                                                                         \
    }                                                                                  \
  } while (0)

#endif
