/* Small helpers shared by every layer: clocks, overflow-checked sizes, hex. */
#ifndef HVD_COMMON_UTIL_H
#define HVD_COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define HVD_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define HVD_MIN(a, b) ((a) < (b) ? (a) : (b))
#define HVD_MAX(a, b) ((a) > (b) ? (a) : (b))
#define hvd_container_of(ptr, type, member)                                            \
  ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

static inline uint64_t hvd_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* a * b into *out; false on overflow. */
static inline bool hvd_mul_overflow(size_t a, size_t b, size_t *out) {
  return __builtin_mul_overflow(a, b, out);
}

/* Fill buf with n cryptographically random bytes (getrandom). 0 on success. */
int hvd_random_bytes(void *buf, size_t n);
/* Lower-case hex of n bytes into out (2n+1 bytes incl. NUL). */
void hvd_hex_encode(const void *in, size_t n, char *out);
/* Constant-time comparison of two byte strings of length n: 1 if equal. */
int hvd_consttime_equal(const void *a, const void *b, size_t n);
/* Parse a decimal integer (optional sign, nothing else: no spaces, no hex) in
 * [lo, hi]; 0 on success, -1 otherwise. */
int hvd_parse_int(const char *s, long lo, long hi, long *out);

#endif
