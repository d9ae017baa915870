/*
 * The timeline: the writer alone (escaping, dropped events, valid JSON while open),
 * whole jobs with HVD_TIMELINE (phases in order per tensor, B/E nesting, SIGKILL
 * mid-run, size cap, one file per rank), run-time windows through
 * hvd_timeline_start/stop, and hvd-timeline summary/merge/render, the picture checked
 * in a real headless Chromium.
 *
 * Traces are checked with Python's json module (a real JSON parser, not ours) and a
 * small checker script written next to them (CHECKER below).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "harness.h"
#include "runtime/timeline.h"

#define PY "/usr/bin/python3"

/* check.py FILE [--prefix P] [--complete] [--allow-open] [--end NAME|NONE]
 *               [--min-lanes N]
 * Per tensor lane: phases never overlap (B/E nest: every E closes the B just before
 * it), durations >= 0, a round starts with NEGOTIATE_* and goes on in the order
 * NEGOTIATE < QUEUE < MEMCPY_IN/INIT/WAIT < op < MEMCPY_OUT, never back in time.
 * Prints "OK lanes=.. spans=.. rounds=.. ready=r0:n,r1:n cycles=.. last=NAME". */
static const char CHECKER[] =
    "import json, sys\n"
    "a = sys.argv[1:]; path = a.pop(0)\n"
    "prefix = None; complete = False; allow_open = False; end = None; min_lanes = 0\n"
    "while a:\n"
    "    o = a.pop(0)\n"
    "    if o == '--prefix': prefix = a.pop(0)\n"
    "    elif o == '--complete': complete = True\n"
    "    elif o == '--allow-open': allow_open = True\n"
    "    elif o == '--end': end = a.pop(0)\n"
    "    elif o == '--min-lanes': min_lanes = int(a.pop(0))\n"
    "    else: raise SystemExit('bad option ' + o)\n"
    "def fail(m):\n"
    "    print('FAIL:', m); sys.exit(1)\n"
    "try:\n"
    "    d = json.loads(open(path, 'rb').read().decode('utf-8'))\n"
    "except Exception as e:\n"
    "    fail('not valid JSON: %s' % e)\n"
    "ev = d['traceEvents']\n"
    "def order(n):\n"
    "    if n.startswith('NEGOTIATE'): return 0\n"
    "    if n == 'QUEUE': return 1\n"
    "    if n.startswith(('MEMCPY_IN', 'INIT_FUSION', 'WAIT_FOR')): return 2\n"
    "    if n.startswith('MEMCPY_OUT'): return 4\n"
    "    return 3\n"
    "lane = {}; stack = {}; last = {}; last_end = {}; rounds = {}; ops = {}\n"
    "spans = 0; ready = {}; cycles = 0\n"
    "for i, e in enumerate(ev):\n"
    "    ph = e.get('ph'); pid = e.get('pid'); nm = e.get('name', '')\n"
    "    if e.get('tid') != 0: fail('event %d: tid %r' % (i, e.get('tid')))\n"
    "    if ph == 'M':\n"
    "        if nm == 'process_name':\n"
    "            if pid in lane: fail('lane %r named twice' % pid)\n"
    "            lane[pid] = e['args']['name']\n"
    "        continue\n"
    "    ts = e.get('ts')\n"
    "    if not isinstance(ts, (int, float)) or ts < 0: fail('event %d: ts %r' % (i, ts))\n"
    "    if pid != 0 and pid not in lane: fail('event %d on lane %r before its name' % (i, pid))\n"
    "    L = lane.get(pid)\n"
    "    if ph == 'B':\n"
    "        st = stack.setdefault(pid, [])\n"
    "        if st: fail('%s: %s begins inside %s' % (L, nm, st[-1][0]))\n"
    "        r = order(nm)\n"
    "        if r == 0:\n"
    "            if complete and pid in last and ops.get(pid, 0) != rounds[pid]:\n"
    "                fail('%s: a round without an op' % L)\n"
    "            rounds[pid] = rounds.get(pid, 0) + 1\n"
    "        elif pid not in last: fail('%s: %s before any NEGOTIATE' % (L, nm))\n"
    "        elif r < last[pid]: fail('%s: %s after a later phase' % (L, nm))\n"
    "        if ts < last_end.get(pid, 0): fail('%s: %s begins at %s, before the previous phase ended (%s)' % (L, nm, ts, last_end[pid]))\n"
    "        last[pid] = r\n"
    "        st.append((nm, ts))\n"
    "    elif ph == 'E':\n"
    "        st = stack.get(pid)\n"
    "        if not st: fail('%s: E %s without a B' % (L, nm))\n"
    "        bn, t0 = st.pop()\n"
    "        if nm and nm != bn: fail('%s: E %s closes %s' % (L, nm, bn))\n"
    "        if ts < t0: fail('%s: %s has a negative duration' % (L, bn))\n"
    "        if e.get('args', {}).get('unfinished') and not allow_open: fail('%s: %s unfinished' % (L, bn))\n"
    "        last_end[pid] = ts; spans += 1\n"
    "        if order(bn) == 3: ops[pid] = ops.get(pid, 0) + 1\n"
    "    elif ph == 'i':\n"
    "        if nm == 'CYCLE_START': cycles += 1\n"
    "        if nm.startswith('rank ') and nm.endswith(' ready'):\n"
    "            ready[nm[5:-6]] = ready.get(nm[5:-6], 0) + 1\n"
    "    else: fail('unexpected ph %r' % ph)\n"
    "nopen = sum(len(s) for s in stack.values())\n"
    "if nopen and not allow_open: fail('%d spans left open' % nopen)\n"
    "with_spans = [p for p in lane if p != 0 and p in last]\n"
    "for p in lane:\n"
    "    if p == 0 or prefix is None or lane[p].startswith(prefix): continue\n"
    "    if p in last: fail('lane %s has spans but is outside the window %s' % (lane[p], prefix))\n"
    "if complete:\n"
    "    for p in with_spans:\n"
    "        if ops.get(p, 0) != rounds.get(p, 0): fail('%s: %d rounds, %d ops' % (lane[p], rounds.get(p, 0), ops.get(p, 0)))\n"
    "if len(with_spans) < min_lanes: fail('%d lanes with spans, want %d' % (len(with_spans), min_lanes))\n"
    "lastname = ev[-1].get('name') if ev else ''\n"
    "if end == 'NONE':\n"
    "    if any(e.get('name') in ('TIMELINE_END', 'TIMELINE_TRUNCATED') for e in ev): fail('closing marker present')\n"
    "elif end and lastname != end: fail('last event is %s, want %s' % (lastname, end))\n"
    "print('OK lanes=%d spans=%d rounds=%d ready=%s cycles=%d last=%s' % (len(with_spans), spans,\n"
    "      sum(rounds.values()), ','.join('r%s:%d' % kv for kv in sorted(ready.items())), cycles, lastname))\n";

/* PNG IMAGE: prints "PNG WxH colors=N nonwhite=F" (decodes it: zlib, unfilter). */
static const char PNGCHECK[] =
    "import sys, zlib, struct\n"
    "b = open(sys.argv[1], 'rb').read()\n"
    "assert b[:8] == b'\\x89PNG\\r\\n\\x1a\\n', 'not a PNG'\n"
    "p = 8; idat = b''\n"
    "while p < len(b):\n"
    "    n, t = struct.unpack('>I4s', b[p:p + 8]); c = b[p + 8:p + 8 + n]; p += 12 + n\n"
    "    if t == b'IHDR': w, h, depth, ct = struct.unpack('>IIBB', c[:10])\n"
    "    elif t == b'IDAT': idat += c\n"
    "assert depth == 8 and ct in (0, 2, 4, 6), 'unexpected PNG format %d/%d' % (depth, ct)\n"
    "bpp = {0: 1, 2: 3, 4: 2, 6: 4}[ct]\n"
    "raw = zlib.decompress(idat); stride = w * bpp; prev = bytearray(stride); colors = set(); white = 0\n"
    "for y in range(h):\n"
    "    f = raw[y * (stride + 1)]; line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])\n"
    "    for x in range(stride):\n"
    "        a = line[x - bpp] if x >= bpp else 0; up = prev[x]; c = prev[x - bpp] if x >= bpp else 0\n"
    "        if f == 1: line[x] = (line[x] + a) & 255\n"
    "        elif f == 2: line[x] = (line[x] + up) & 255\n"
    "        elif f == 3: line[x] = (line[x] + (a + up) // 2) & 255\n"
    "        elif f == 4:\n"
    "            pa, pb, pc = abs(up - c), abs(a - c), abs(a + up - 2 * c)\n"
    "            line[x] = (line[x] + (a if pa <= pb and pa <= pc else up if pb <= pc else c)) & 255\n"
    "    for x in range(0, stride, bpp):\n"
    "        px = bytes(line[x:x + bpp]); colors.add(px)\n"
    "        if all(v >= 250 for v in px[:3]): white += 1\n"
    "    prev = line\n"
    "print('PNG %dx%d colors=%d nonwhite=%.3f' % (w, h, len(colors), 1 - white / (w * h)))\n";

/* ---- helpers ---------------------------------------------------------------------- */

static char *tmpdir(void) {
  char t[] = "/tmp/hvd-tl-XXXXXX";
  cr_assert_not_null(mkdtemp(t), "mkdtemp");
  return strdup(t);
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f, "cannot write %s", path);
  fputs(text, f);
  fclose(f);
}

static void rmrf(char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  run_result_t r = run_sh(cmd, NULL, 30);
  run_free(&r);
  free(dir);
}

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Python's json module accepts the file. */
static void assert_json(const char *path) {
  char cmd[1200];
  snprintf(cmd, sizeof cmd, PY " -c 'import json,sys; json.load(open(sys.argv[1]))' '%s'", path);
  run_result_t r = run_sh(cmd, NULL, 60);
  cr_assert(r.exited && r.status == 0, "%s is not valid JSON:\n%s", path, r.out);
  run_free(&r);
}

/* Runs the checker; asserts it passed; returns its output line (malloc'd). */
static char *check(const char *dir, const char *file, const char *opts) {
  char script[600], cmd[2000];
  snprintf(script, sizeof script, "%s/check.py", dir);
  if (access(script, R_OK) != 0) write_file(script, CHECKER);
  snprintf(cmd, sizeof cmd, PY " '%s' '%s' %s", script, file, opts ? opts : "");
  run_result_t r = run_sh(cmd, NULL, 120);
  cr_assert(r.exited && r.status == 0, "trace check of %s (%s) failed:\n%s", file, opts ? opts : "",
            r.out);
  cr_log_info("%s: %s", file, r.out);
  char *out = strdup(r.out);
  run_free(&r);
  return out;
}

static run_result_t job(const char *args, char *const env[], double timeout) {
  char cmd[2000];
  snprintf(cmd, sizeof cmd, "%s %s", bin_path("hvdrun"), args);
  run_result_t r = run_sh(cmd, env, timeout);
  cr_log_info("%s: %.1f s", cmd, r.seconds);
  return r;
}

static void expect_ok(run_result_t *r, const char *what) {
  if (!(r->exited && r->status == 0)) cr_log_error("%s output:\n%s", what, r->out);
  cr_assert(!r->timed_out, "%s timed out", what);
  cr_assert(r->exited && r->status == 0, "%s failed: %s", what, last_line(r));
}

/* A timeline of runtime_check async_fused on 2 ranks (200 tensors) in dir/t.json. */
/* arena_off: the fusion buffer's MEMCPY_IN/OUT phases exist only on the message path;
 * on the same-host arena the tensors go straight in and out (runtime/exec.c). */
static void record_async_fused(const char *dir, char *path, size_t len, int arena_off) {
  snprintf(path, len, "%s/t.json", dir);
  char tl[700];
  snprintf(tl, sizeof tl, "HVD_TIMELINE=%s", path);
  char *env[] = {tl, "HVD_TIMELINE_MARK_CYCLES=1", arena_off ? "HVD_SHM_ARENA=0" : NULL, NULL};
  char args[1200];
  snprintf(args, sizeof args, "-np 2 %s async_fused", prog_path("runtime_check"));
  run_result_t r = job(args, env, 100);
  expect_ok(&r, "async_fused with a timeline");
  run_free(&r);
}

static run_result_t tool(const char *args) {
  char cmd[2400];
  snprintf(cmd, sizeof cmd, "%s %s", bin_path("hvd-timeline"), args);
  run_result_t r = run_sh(cmd, NULL, 120);
  cr_log_info("%s:\n%s", cmd, r.out);
  return r;
}

/* ---- the writer alone ------------------------------------------------------------- */

/* Names that need escaping come out as the same strings; invalid UTF-8 as U+FFFD;
 * an E without a B and invalid args do not break the file; the file is valid JSON
 * while the timeline is open; a full ring drops and counts events, and the count is
 * in the file. */
Test(timeline_writer, escaping_drops_and_valid_while_open, .timeout = 60) {
  char *dir = tmpdir();
  char path[600];
  snprintf(path, sizeof path, "%s/w.json", dir);
  hvd_timeline_opts_t o = {.path = path, .rank = 3, .mark_cycles = 1, .ring_events = 64};
  hvd_timeline_t *tl = NULL;
  hvd_err_t err = {{0}};
  cr_assert_eq(hvd_timeline_open(&o, &tl, &err), HVD_OK, "%s", err.msg);
  uint64_t t = hvd_now_ns();
  const char *weird = "q\"uo\\te\nnl\ttab \x01 \xc3\xa9 \xff end";
  hvd_tl_begin(tl, weird, "NEGOTIATE_ALLREDUCE", t);
  hvd_tl_instant(tl, weird, "rank 0 ready", t + 10);
  hvd_tl_end(tl, weird, "NEGOTIATE_ALLREDUCE", t + 20, NULL);
  hvd_tl_end(tl, "never.began", "QUEUE", t + 25, NULL); /* left out */
  hvd_tl_begin(tl, weird, "ALLREDUCE", t + 30);
  hvd_tl_end(tl, weird, "ALLREDUCE", t + 40, "\"broken\":"); /* invalid args */
  hvd_tl_begin(tl, "open.at.close", "NEGOTIATE_BROADCAST", t + 50);
  hvd_tl_cycle(tl, t + 60);
  cr_assert(hvd_tl_mark_cycles(tl));
  usleep(150 * 1000); /* a flush */
  assert_json(path);
  char *out = check(dir, path, "--allow-open");
  cr_assert(strstr(out, "cycles=1") != NULL, "%s", out);
  free(out);

  /* Overfill the 64 KiB ring faster than the writer drains it. The time per call is
   * what a producer pays per event (logged, not asserted: it is a benchmark). */
  static const char *const flood[] = {"flood.0", "flood.1", "flood.2", "flood.3", "flood.4"};
  uint64_t f0 = hvd_now_ns();
  for (int i = 0; i < 200000; i++) hvd_tl_instant(tl, flood[i % 5], "rank 1 ready", hvd_now_ns());
  uint64_t f1 = hvd_now_ns();
  uint64_t dropped = hvd_tl_dropped(tl);
  cr_log_info("producer: %.1f ns per event (incl. hvd_now_ns), %llu of 200000 dropped",
              (double)(f1 - f0) / 200000, (unsigned long long)dropped);
  cr_assert_gt(dropped, 0, "the flood dropped nothing");
  hvd_timeline_close(tl);
  assert_json(path);

  char script[700], cmd[2000];
  snprintf(script, sizeof script, "%s/names.py", dir);
  write_file(script,
             "import json, sys\n"
             "d = json.load(open(sys.argv[1]))\n"
             "ev = d['traceEvents']\n"
             "names = [e['args']['name'] for e in ev if e['name'] == 'process_name']\n"
             "want = 'q\"uo\\\\te\\nnl\\ttab \\x01 \\u00e9 \\ufffd end'\n"
             "assert want in names, repr(names[:3])\n"
             "assert 'never.began' not in names\n"
             "assert d['otherData']['rank'] == 3\n"
             "bad = [e for e in ev if e['ph'] == 'E' and e['name'] == 'ALLREDUCE']\n"
             "assert bad and bad[0]['args'] == {'args_invalid': True}, bad\n"
             "opn = [e for e in ev if e['ph'] == 'E' and e['name'] == 'NEGOTIATE_BROADCAST']\n"
             "assert opn and opn[0]['args'] == {'unfinished': True}, opn\n"
             "dr = [e for e in ev if e['name'] == 'DROPPED_EVENTS']\n"
             "assert dr, 'no DROPPED_EVENTS'\n"
             "end = ev[-1]\n"
             "assert end['name'] == 'TIMELINE_END', end\n"
             "assert end['args']['dropped'] == int(sys.argv[2]) == dr[-1]['args']['dropped'], (end, dr[-1])\n"
             "print('names ok')\n");
  snprintf(cmd, sizeof cmd, PY " '%s' '%s' %llu", script, path, (unsigned long long)dropped);
  run_result_t r = run_sh(cmd, NULL, 60);
  cr_assert(r.exited && r.status == 0, "%s", r.out);
  run_free(&r);
  rmrf(dir);
}

Test(timeline_writer, null_and_bad_path, .timeout = 30) {
  hvd_tl_begin(NULL, "x", "QUEUE", 1);
  hvd_tl_end(NULL, "x", "QUEUE", 2, NULL);
  hvd_tl_instant(NULL, "x", "y", 3);
  hvd_tl_cycle(NULL, 4);
  hvd_timeline_close(NULL);
  cr_assert_eq(hvd_tl_dropped(NULL), 0);
  cr_assert_eq(hvd_tl_mark_cycles(NULL), 0);
  hvd_timeline_opts_t o = {.path = "/nonexistent-dir/x.json"};
  hvd_timeline_t *tl = (hvd_timeline_t *)1;
  hvd_err_t err = {{0}};
  cr_assert_eq(hvd_timeline_open(&o, &tl, &err), HVD_ERR_INVALID_PARAM);
  cr_assert_null(tl);
  cr_assert(strstr(err.msg, "/nonexistent-dir/x.json") != NULL, "%s", err.msg);
}

/* ---- whole jobs ------------------------------------------------------------------- */

Test(timeline_job, async_fused_phases_in_order, .timeout = 150) {
  char *dir = tmpdir(), path[700];
  record_async_fused(dir, path, sizeof path, 0);
  assert_json(path);
  char *out = check(dir, path, "--complete --prefix fused. --min-lanes 200 --end TIMELINE_END");
  cr_assert(strstr(out, "r0:") && strstr(out, "r1:"), "no readiness marks of both ranks: %s", out);
  cr_assert(strstr(out, "cycles=0") == NULL, "no CYCLE_START with HVD_TIMELINE_MARK_CYCLES: %s", out);
  free(out);
  rmrf(dir);
}

/* SIGKILL to the whole job (hvdrun and its ranks at once: a rank that outlives hvdrun
 * reports it and may close the trace itself) in the middle of a long loop: the trace
 * cut at any point still parses. */
Test(timeline_job, sigkill_leaves_valid_json, .timeout = 150) {
  char *dir = tmpdir(), path[700], cmd[3000];
  snprintf(path, sizeof path, "%s/k.json", dir);
  snprintf(cmd, sizeof cmd,
           "HVD_TIMELINE='%s' %s -np 2 %s --counts 1000 --dtypes float32 --ops sum "
           "--iters 99999999 & H=$!; i=0; "
           "while [ $i -lt 600 ]; do s=$(stat -c %%s '%s' 2>/dev/null || echo 0); "
           "[ \"$s\" -gt 300000 ] && break; sleep 0.05; i=$((i+1)); done; "
           "sleep 0.3; kill -KILL $(pgrep -P $H) $H; wait $H; echo \"hvdrun status $?\"",
           path, bin_path("hvdrun"), prog_path("allreduce_check"), path);
  run_result_t r = run_sh(cmd, NULL, 90);
  cr_log_info("%s", r.out);
  cr_assert(!r.timed_out, "the kill script timed out");
  cr_assert(count_in(&r, "hvdrun status 137") == 1, "hvdrun was not killed: %s", r.out);
  run_free(&r);
  /* The ranks die with hvdrun; wait until they are gone before reading. */
  for (int i = 0; i < 200 && procs_matching("--iters 99999999") > 0; i++) usleep(50 * 1000);
  cr_assert_eq(procs_matching("--iters 99999999"), 0, "ranks outlived hvdrun");
  cr_assert_gt(file_size(path), 300000, "the job did not get far: %ld bytes", file_size(path));
  assert_json(path);
  char *out = check(dir, path, "--allow-open --end NONE --min-lanes 1");
  free(out);
  rmrf(dir);
}

/* hvd_timeline_start / stop / start-over-start at run time, on every rank: each file
 * is valid and has spans only of its own window's tensors. */
Test(timeline_job, start_stop_restart_windows, .timeout = 150) {
  char *dir = tmpdir(), args[1200];
  snprintf(args, sizeof args, "-np 2 %s windows '%s'", prog_path("timeline_prog"), dir);
  run_result_t r = job(args, NULL, 100);
  expect_ok(&r, "timeline_prog windows");
  cr_assert_eq(count_in(&r, "TIMELINE_PROG windows: OK"), 2, "%s", r.out);
  run_free(&r);
  const char *w[] = {"w1", "w2", "w3", "w4"};
  for (int k = 0; k < 4; k++)
    for (int rank = 0; rank < 2; rank++) {
      char path[900], opts[64];
      snprintf(path, sizeof path, "%s/%s.%d.json", dir, w[k], rank);
      snprintf(opts, sizeof opts, "--complete --prefix %s. --min-lanes 10 --end TIMELINE_END", w[k]);
      assert_json(path);
      char *out = check(dir, path, opts);
      cr_assert(strstr(out, "lanes=10 ") != NULL, "%s: %s", path, out);
      free(out);
    }
  char none[900];
  snprintf(none, sizeof none, "%s/pre.0.json", dir);
  cr_assert_eq(file_size(none), -1);
  rmrf(dir);
}

/* HVD_TIMELINE_MAX_MB: the file stays under the cap and ends with the marker. */
Test(timeline_job, max_mb_caps_the_file, .timeout = 150) {
  char *dir = tmpdir(), path[700], tl[800], args[1200];
  snprintf(path, sizeof path, "%s/cap.json", dir);
  snprintf(tl, sizeof tl, "HVD_TIMELINE=%s", path);
  char *env[] = {tl, "HVD_TIMELINE_MAX_MB=0.05", NULL};
  snprintf(args, sizeof args, "-np 2 %s --counts 100 --dtypes float32 --ops sum --iters 2000",
           prog_path("allreduce_check"));
  run_result_t r = job(args, env, 120);
  expect_ok(&r, "allreduce_check with a capped timeline");
  run_free(&r);
  long cap = (long)(0.05 * 1024 * 1024), size = file_size(path);
  cr_assert(size > cap / 2 && size <= cap, "file is %ld bytes, cap %ld", size, cap);
  assert_json(path);
  char *out = check(dir, path, "--allow-open --end TIMELINE_TRUNCATED --min-lanes 1");
  free(out);
  rmrf(dir);
}

/* HVD_TIMELINE_ALL_RANKS: t.0.json and t.1.json; merge gives one trace with each
 * rank's lanes prefixed; summary and render read the merged file too. */
Test(timeline_job, all_ranks_and_merge, .timeout = 150) {
  char *dir = tmpdir(), tl[700], args[1200];
  snprintf(tl, sizeof tl, "HVD_TIMELINE=%s/t.json", dir);
  char *env[] = {tl, "HVD_TIMELINE_ALL_RANKS=1", NULL};
  snprintf(args, sizeof args, "-np 2 %s async_fused", prog_path("runtime_check"));
  run_result_t r = job(args, env, 100);
  expect_ok(&r, "async_fused with HVD_TIMELINE_ALL_RANKS");
  run_free(&r);
  char p0[800], p1[800], m[800];
  snprintf(p0, sizeof p0, "%s/t.0.json", dir);
  snprintf(p1, sizeof p1, "%s/t.1.json", dir);
  snprintf(m, sizeof m, "%s/merged.json", dir);
  free(check(dir, p0, "--complete --min-lanes 200 --end TIMELINE_END"));
  free(check(dir, p1, "--complete --min-lanes 200 --end TIMELINE_END"));

  char targs[3000];
  snprintf(targs, sizeof targs, "merge -o '%s' '%s' '%s'", m, p1, p0);
  r = tool(targs);
  cr_assert(r.exited && r.status == 0, "merge failed: %s", r.out);
  cr_assert(count_in(&r, "merged 2 files (ranks 0 1)") == 1, "%s", r.out);
  run_free(&r);
  assert_json(m);
  free(check(dir, m, "--complete --min-lanes 400"));
  char script[800], cmd[2000];
  snprintf(script, sizeof script, "%s/merged.py", dir);
  write_file(script,
             "import json, sys\n"
             "d = json.load(open(sys.argv[1]))\n"
             "names = {e['pid']: e['args']['name'] for e in d['traceEvents'] if e['name'] == 'process_name'}\n"
             "assert names[0] == 'hvd rank 0' and names[1000000] == 'hvd rank 1', names.get(0)\n"
             "assert sum(1 for n in names.values() if n.startswith('rank 0: fused.')) == 200\n"
             "assert sum(1 for n in names.values() if n.startswith('rank 1: fused.')) == 200\n"
             "assert all(p // 1000000 == int(n.split(':')[0].split()[-1]) for p, n in names.items())\n"
             "assert d['otherData']['ranks'] == [0, 1]\n"
             "print('merged ok')\n");
  snprintf(cmd, sizeof cmd, PY " '%s' '%s'", script, m);
  r = run_sh(cmd, NULL, 60);
  cr_assert(r.exited && r.status == 0, "%s", r.out);
  run_free(&r);

  snprintf(targs, sizeof targs, "summary '%s'", m);
  r = tool(targs);
  cr_assert(r.exited && r.status == 0, "summary of the merged file failed: %s", r.out);
  cr_assert(count_in(&r, "rank 0: fused.") >= 1 || count_in(&r, "rank 1: fused.") >= 1, "%s", r.out);
  run_free(&r);
  rmrf(dir);
}

/* ---- hvd-timeline ----------------------------------------------------------------- */

Test(timeline_tool, summary_phases_and_percentages, .timeout = 150) {
  char *dir = tmpdir(), path[700], targs[1600];
  record_async_fused(dir, path, sizeof path, 1);
  snprintf(targs, sizeof targs, "summary '%s'", path);
  run_result_t r = tool(targs);
  cr_assert(r.exited && r.status == 0, "summary failed: %s", r.out);
  const char *want[] = {"Time per phase", "NEGOTIATE_ALLREDUCE", "QUEUE", "MEMCPY_IN_FUSION_BUFFER",
                        "ALLREDUCE", "MEMCPY_OUT_FUSION_BUFFER", "100.0%", "slowest tensors",
                        "fused.", "Last rank to become ready", "200 tensor lanes"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    cr_assert(count_in(&r, want[i]) >= 1, "summary lacks '%s':\n%s", want[i], r.out);
  /* Percent column: every phase row has one. */
  cr_assert(count_in(&r, "%") >= 6, "%s", r.out);
  /* The last-ready table counts each of the 200 rounds once. */
  cr_assert(count_in(&r, "200 rounds") == 1, "%s", r.out);
  run_free(&r);

  /* Not JSON: a clear error, not a crash. */
  char bad[800];
  snprintf(bad, sizeof bad, "%s/bad.json", dir);
  write_file(bad, "{\"traceEvents\":[{\"ph\":\"B\",}]}");
  snprintf(targs, sizeof targs, "summary '%s'", bad);
  r = tool(targs);
  cr_assert(r.exited && r.status == 1 && count_in(&r, "not valid JSON: line 1") == 1, "%s", r.out);
  run_free(&r);
  rmrf(dir);
}

/* The rendered page in a real headless Chromium: the script ran without console
 * errors and put one lane per tensor in the DOM, and the screenshot is a picture. */
Test(timeline_tool, render_in_headless_chromium, .timeout = 240) {
  run_result_t have = run_sh("command -v chromium", NULL, 10);
  cr_assert(have.exited && have.status == 0,
            "chromium is not installed (scripts/setup.sh installs it): this test needs it");
  run_free(&have);
  char *dir = tmpdir(), path[700], html[800], svg[800], png[800], targs[2000], cmd[4000];
  record_async_fused(dir, path, sizeof path, 0);
  snprintf(html, sizeof html, "%s/render.html", dir);
  snprintf(svg, sizeof svg, "%s/render.svg", dir);
  snprintf(png, sizeof png, "%s/render.png", dir);
  snprintf(targs, sizeof targs, "render -o '%s' '%s'", html, path);
  run_result_t r = tool(targs);
  cr_assert(r.exited && r.status == 0 && count_in(&r, "rendered 200 rows") == 1, "%s", r.out);
  run_free(&r);
  snprintf(targs, sizeof targs, "render -o '%s' '%s'", svg, path);
  r = tool(targs);
  cr_assert(r.exited && r.status == 0, "%s", r.out);
  run_free(&r);
  snprintf(cmd, sizeof cmd, PY " -c 'import sys,xml.etree.ElementTree as E; E.parse(sys.argv[1])' '%s'", svg);
  r = run_sh(cmd, NULL, 60);
  cr_assert(r.exited && r.status == 0, "the SVG is not well-formed XML: %s", r.out);
  run_free(&r);

  if (test_quick()) { /* sanitizers: our renderer ran; the browser is not ours */
    cr_log_info("HVD_TEST_QUICK: chromium not started");
    rmrf(dir);
    return;
  }
  const char *flags = "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
                      "--disable-background-networking --disable-component-update --disable-sync "
                      "--enable-logging=stderr --v=0";
  snprintf(cmd, sizeof cmd,
           "U=$(mktemp -d); chromium %s --user-data-dir=$U --dump-dom 'file://%s' > '%s/dom.html' "
           "2> '%s/chromium-dom.log'; s=$?; rm -rf $U; exit $s",
           flags, html, dir, dir);
  r = run_sh(cmd, NULL, 120);
  cr_assert(r.exited && r.status == 0, "chromium --dump-dom failed: %s", r.out);
  run_free(&r);
  snprintf(cmd, sizeof cmd, "grep -c ':CONSOLE' '%s/chromium-dom.log'; grep ':CONSOLE' '%s/chromium-dom.log'; "
           "grep -o 'id=\"status\"[^<]*' '%s/dom.html'", dir, dir, dir);
  r = run_sh(cmd, NULL, 30);
  cr_log_info("%s", r.out);
  cr_assert(count_in(&r, "Uncaught") == 0 && strncmp(r.out, "0\n", 2) == 0,
            "console messages from the page:\n%s", r.out);
  cr_assert(count_in(&r, "data-lanes=\"200\"") == 1 && count_in(&r, "rendered 200 lanes") == 1,
            "the script did not put 200 lanes in the DOM:\n%s", r.out);
  run_free(&r);

  snprintf(cmd, sizeof cmd,
           "U=$(mktemp -d); chromium %s --user-data-dir=$U --screenshot='%s' --window-size=1200,800 "
           "'file://%s' > '%s/chromium-shot.log' 2>&1; s=$?; rm -rf $U; exit $s",
           flags, png, html, dir);
  r = run_sh(cmd, NULL, 120);
  cr_assert(r.exited && r.status == 0, "chromium --screenshot failed: %s", r.out);
  run_free(&r);
  cr_assert_gt(file_size(png), 10000, "screenshot missing or tiny: %ld bytes", file_size(png));
  char script[800];
  snprintf(script, sizeof script, "%s/png.py", dir);
  write_file(script, PNGCHECK);
  snprintf(cmd, sizeof cmd, PY " '%s' '%s'", script, png);
  r = run_sh(cmd, NULL, 120);
  cr_assert(r.exited && r.status == 0, "PNG check failed: %s", r.out);
  cr_log_info("%s", r.out);
  int w = 0, h = 0, colors = 0;
  double nonwhite = 0;
  cr_assert_eq(sscanf(r.out, "PNG %dx%d colors=%d nonwhite=%lf", &w, &h, &colors, &nonwhite), 4, "%s", r.out);
  cr_assert(w == 1200 && h == 800, "screenshot is %dx%d", w, h);
  cr_assert(colors >= 8, "only %d colors: a blank picture", colors);
  cr_assert(nonwhite > 0.05, "only %.1f%% of the picture is not white", nonwhite * 100);
  run_free(&r);
  rmrf(dir);
}
