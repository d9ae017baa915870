/*
 * core_latency: round-trip time of one cache line between two CPUs, sampled
 * repeatedly, to tell which of the VM's "two speeds" (docs/performance.md) the machine
 * is in right now: the line bounces between a thread pinned to each CPU.
 *
 *   cc -O2 -pthread tools/core-latency/core_latency.c -o core_latency
 *   ./core_latency [-a CPU] [-b CPU] [-n SAMPLES] [-i INTERVAL_MS] [-r ROUNDTRIPS]
 *
 * Prints one line per sample: seconds since start and the mean round trip in ns.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Alignas(64) _Atomic long ping;
static _Alignas(64) _Atomic long pong;
static _Atomic int quit;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  return pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

static void *echo(void *arg) {
  int rc = pin(*(int *)arg);
  if (rc != 0) {
    fprintf(stderr, "core_latency: cannot pin to CPU %d: %s\n", *(int *)arg, strerror(rc));
    exit(1);
  }
  long seen = 0;
  while (!atomic_load_explicit(&quit, memory_order_relaxed)) {
    long v = atomic_load_explicit(&ping, memory_order_acquire);
    if (v != seen) {
      seen = v;
      atomic_store_explicit(&pong, v, memory_order_release);
    }
  }
  return NULL;
}

static long arg(const char *v, const char *name) {
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || *end || x < 0) {
    fprintf(stderr, "core_latency: error: %s needs a non-negative integer, got '%s'\n", name, v);
    exit(2);
  }
  return x;
}

int main(int argc, char **argv) {
  int a = 0, b = 1;
  long samples = 20, interval_ms = 500, trips = 100000;
  for (int i = 1; i < argc; i++) {
    if (i + 1 >= argc) {
      fprintf(stderr, "usage: core_latency [-a CPU] [-b CPU] [-n SAMPLES] [-i MS] [-r TRIPS]\n");
      return 2;
    }
    if (!strcmp(argv[i], "-a")) a = (int)arg(argv[++i], "-a");
    else if (!strcmp(argv[i], "-b")) b = (int)arg(argv[++i], "-b");
    else if (!strcmp(argv[i], "-n")) samples = arg(argv[++i], "-n");
    else if (!strcmp(argv[i], "-i")) interval_ms = arg(argv[++i], "-i");
    else if (!strcmp(argv[i], "-r")) trips = arg(argv[++i], "-r");
    else {
      fprintf(stderr, "core_latency: error: unknown option '%s'\n", argv[i]);
      return 2;
    }
  }
  if (trips < 1) trips = 1;
  int rc = pin(a);
  if (rc != 0) {
    fprintf(stderr, "core_latency: cannot pin to CPU %d: %s\n", a, strerror(rc));
    return 1;
  }
  pthread_t t;
  if (pthread_create(&t, NULL, echo, &b) != 0) return 1;
  const double start = now();
  long next = 0;
  for (long s = 0; s < samples; s++) {
    const double t0 = now();
    for (long k = 0; k < trips; k++) {
      atomic_store_explicit(&ping, ++next, memory_order_release);
      while (atomic_load_explicit(&pong, memory_order_acquire) != next) {
      }
    }
    const double rtt = (now() - t0) / (double)trips * 1e9;
    printf("%8.2f s  %7.1f ns\n", t0 - start, rtt);
    fflush(stdout);
    if (s + 1 < samples) usleep((useconds_t)(interval_ms * 1000));
  }
  atomic_store(&quit, 1);
  pthread_join(t, NULL);
  return 0;
}
