/*
 * libFuzzer harness: the request-list decoder (a worker's negotiation message to its
 * process set's coordinator; runtime/message.c), and hvd_msg_peek_set, which the
 * background thread calls on the same bytes first.
 *
 * Input: one byte choosing the process set's size (1..64), then the message.
 * Properties checked besides "no crash, no sanitizer report":
 *   - a refused message is HVD_ERR_PROTOCOL with a reason, and leaves the list empty;
 *   - an accepted one keeps the promises coord.c relies on (types, dtypes, ops and
 *     ranks in range, alltoall splits one per member, names NUL-free and bounded);
 *   - peek_set agrees with the decoded set;
 *   - encode(decode(msg)) is the same bytes as msg, and hvd_request_copy is exact.
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_check.h"
#include "runtime/message.h"

static void check_request(const hvd_request_t *q, int nmembers, uint32_t set) {
  FUZZ_CHECK(q->type < HVD_MSG_ERROR, "type %u", q->type);
  FUZZ_CHECK(q->dtype < HVD_DTYPE_COUNT, "dtype %u", q->dtype);
  FUZZ_CHECK(q->op < HVD_OP_COUNT, "op %u", q->op);
  FUZZ_CHECK(q->rank >= 0 && q->rank < nmembers, "rank %d of %d", q->rank, nmembers);
  if (q->type == HVD_MSG_ALLTOALL)
    FUZZ_CHECK(q->nsplits == 0 || q->nsplits == (uint32_t)nmembers, "%u splits", q->nsplits);
  else if (q->type != HVD_MSG_PROCESS_SET)
    FUZZ_CHECK(q->nsplits == 0, "%u splits on type %u", q->nsplits, q->type);
  FUZZ_CHECK((q->nsplits == 0) == (q->splits == NULL), "splits %u vs pointer", q->nsplits);
  if (q->type == HVD_MSG_PROCESS_SET) {
    /* The new set's ranks, as hvd_process_set_create sends them: 1..size distinct
     * ranks of the world (the only set that creates sets), ascending. */
    FUZZ_CHECK(set == 0, "process set request on set %u", set);
    FUZZ_CHECK(q->nsplits >= 1 && q->nsplits <= (uint32_t)nmembers, "%u ranks", q->nsplits);
    for (uint32_t i = 0; i < q->nsplits; i++)
      FUZZ_CHECK(q->splits[i] < (uint64_t)nmembers && (i == 0 || q->splits[i] > q->splits[i - 1]),
                 "process set rank %llu at %u", (unsigned long long)q->splits[i], i);
  }
  FUZZ_CHECK(q->name != NULL && strlen(q->name) <= HVD_NAME_MAX, "name");

  hvd_request_t copy;
  FUZZ_CHECK(hvd_request_copy(&copy, q) == HVD_OK, "copy failed");
  FUZZ_CHECK(strcmp(copy.name, q->name) == 0 && copy.nsplits == q->nsplits &&
                 copy.count == q->count && copy.rank == q->rank &&
                 (q->nsplits == 0 ||
                  memcmp(copy.splits, q->splits, q->nsplits * sizeof *q->splits) == 0),
             "copy differs");
  hvd_request_free(&copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int nmembers = 1 + data[0] % 64;
  data++;
  size--;

  uint32_t set = 0;
  int peeked = hvd_msg_peek_set(data, size, &set);
  hvd_request_list_t l;
  hvd_err_t e = {{0}};
  hvd_status_t st = hvd_request_list_decode(data, size, nmembers, &l, &e);
  if (st != HVD_OK) {
    FUZZ_CHECK(st == HVD_ERR_PROTOCOL, "status %d", (int)st);
    FUZZ_CHECK(e.msg[0] != '\0', "refused without a reason");
    FUZZ_CHECK(l.n == 0 && l.reqs == NULL && l.bits == NULL, "refused list not emptied");
    return 0;
  }
  FUZZ_CHECK(peeked == 0 && set == l.set, "peek_set %d/%u, decoded set %u", peeked, set, l.set);
  FUZZ_CHECK((l.nwords == 0) == (l.bits == NULL), "cache words %u vs pointer", l.nwords);
  FUZZ_CHECK((l.n == 0) == (l.reqs == NULL), "requests %u vs pointer", l.n);
  for (uint32_t i = 0; i < l.n; i++) check_request(&l.reqs[i], nmembers, l.set);

  hvd_wbuf_t b = {0};
  FUZZ_CHECK(hvd_request_list_encode(&l, &b) == HVD_OK, "re-encode failed");
  FUZZ_CHECK(b.len == size, "re-encoded %zu bytes, was %zu", b.len, size);
  FUZZ_CHECK(memcmp(b.data, data, size) == 0, "re-encoded message differs");
  hvd_wbuf_free(&b);
  hvd_request_list_free(&l);
  return 0;
}
