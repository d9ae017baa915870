/*
 * libFuzzer harness: the response-list decoder (the coordinator's answer that every
 * member of a process set executes; runtime/message.c).
 *
 * Input: one byte choosing the process set's size (1..64), then the message.
 * Properties checked besides "no crash, no sanitizer report":
 *   - a refused message is HVD_ERR_PROTOCOL with a reason, and leaves the list empty;
 *   - an accepted one keeps the promises exec.c and bg.c index by: the counts fit the
 *     response's type and the set's size, a broadcast root is a member, allgather and
 *     alltoall carry one tensor, only JOIN carries none, names are NUL-free and
 *     bounded;
 *   - peek_set agrees with the decoded set;
 *   - encode(decode(msg)) is the same bytes as msg.
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_check.h"
#include "runtime/message.h"

static void check_response(const hvd_response_t *s, int nmembers, uint32_t set) {
  uint64_t n = (uint64_t)nmembers;
  FUZZ_CHECK(s->type < HVD_MSG_TYPE_COUNT, "type %u", s->type);
  FUZZ_CHECK(s->dtype < HVD_DTYPE_COUNT, "dtype %u", s->dtype);
  FUZZ_CHECK(s->op < HVD_OP_COUNT, "op %u", s->op);
  for (uint32_t t = 0; t < s->ntensors; t++)
    FUZZ_CHECK(s->names[t] != NULL && strlen(s->names[t]) <= HVD_NAME_MAX, "name %u", t);
  FUZZ_CHECK((s->ntensors == 0) == (s->cache_ids == NULL), "cache ids vs tensors");
  FUZZ_CHECK((s->ncounts == 0) == (s->counts == NULL), "counts vs pointer");
  switch ((hvd_msg_type_t)s->type) {
  case HVD_MSG_ALLREDUCE: case HVD_MSG_BROADCAST: case HVD_MSG_REDUCESCATTER:
    FUZZ_CHECK(s->ncounts == s->ntensors, "%u counts for %u tensors", s->ncounts, s->ntensors);
    break;
  case HVD_MSG_ALLGATHER:
    FUZZ_CHECK(s->ntensors == 1 && s->ncounts == n, "allgather %u/%u", s->ntensors, s->ncounts);
    break;
  case HVD_MSG_ALLTOALL:
    FUZZ_CHECK(s->ntensors == 1 && s->ncounts == n * n, "alltoall %u/%u", s->ntensors,
               s->ncounts);
    break;
  default:
    break;
  }
  if (s->type != HVD_MSG_JOIN) FUZZ_CHECK(s->ntensors > 0, "type %u without tensors", s->type);
  if (s->type == HVD_MSG_BROADCAST)
    FUZZ_CHECK(s->root >= 0 && s->root < nmembers, "root %d of %d", s->root, nmembers);
  if (s->type == HVD_MSG_PROCESS_SET) {
    /* exec.c makes the counts the new set's members: ranks of the world (the only
     * set that creates sets), distinct and ascending. */
    FUZZ_CHECK(set == 0, "process set response on set %u", set);
    FUZZ_CHECK(s->ncounts >= 1 && s->ncounts <= n, "%u ranks", s->ncounts);
    for (uint32_t i = 0; i < s->ncounts; i++)
      FUZZ_CHECK(s->counts[i] < n && (i == 0 || s->counts[i] > s->counts[i - 1]),
                 "process set rank %llu at %u", (unsigned long long)s->counts[i], i);
  }
  if (s->error != NULL) FUZZ_CHECK(strlen(s->error) <= (1u << 16), "error text");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int nmembers = 1 + data[0] % 64;
  data++;
  size--;

  uint32_t set = 0;
  int peeked = hvd_msg_peek_set(data, size, &set);
  hvd_response_list_t l;
  hvd_err_t e = {{0}};
  hvd_status_t st = hvd_response_list_decode(data, size, nmembers, &l, &e);
  if (st != HVD_OK) {
    FUZZ_CHECK(st == HVD_ERR_PROTOCOL, "status %d", (int)st);
    FUZZ_CHECK(e.msg[0] != '\0', "refused without a reason");
    FUZZ_CHECK(l.n == 0 && l.resps == NULL && l.evict == NULL, "refused list not emptied");
    return 0;
  }
  FUZZ_CHECK(peeked == 0 && set == l.set, "peek_set %d/%u, decoded set %u", peeked, set, l.set);
  FUZZ_CHECK((l.nevict == 0) == (l.evict == NULL), "evictions %u vs pointer", l.nevict);
  FUZZ_CHECK((l.n == 0) == (l.resps == NULL), "responses %u vs pointer", l.n);
  for (uint32_t i = 0; i < l.n; i++) check_response(&l.resps[i], nmembers, l.set);

  hvd_wbuf_t b = {0};
  FUZZ_CHECK(hvd_response_list_encode(&l, &b) == HVD_OK, "re-encode failed");
  FUZZ_CHECK(b.len == size, "re-encoded %zu bytes, was %zu", b.len, size);
  FUZZ_CHECK(memcmp(b.data, data, size) == 0, "re-encoded message differs");
  hvd_wbuf_free(&b);
  hvd_response_list_free(&l);
  return 0;
}
