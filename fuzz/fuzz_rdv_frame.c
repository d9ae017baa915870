/*
 * libFuzzer harness: the rendezvous frame decoder and every payload parser.
 *
 * The input is a byte stream as a peer would send it: frames back to back. Each
 * header goes through hvd_rdv_decode_header and each payload through
 * hvd_rdv_msg_decode (the one parser the server and the client use for every frame
 * type, in either direction). Properties checked besides "no crash, no sanitizer
 * report":
 *   - a refused header or payload says why (non-empty message);
 *   - a decoded message points inside its payload and respects its bounds;
 *   - encode(decode(frame)) is the same bytes as the frame (the codec is exact, so a
 *     field that is dropped, swapped or mis-sized shows up as a difference).
 * Decoding stops at the first refused or truncated frame, as a connection would.
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_check.h"
#include "transport/rdv.h"

static void check_bounds(const hvd_rdv_msg_t *m, const uint8_t *p, size_t len) {
  if (m->str_len > 0)
    FUZZ_CHECK(m->str >= p && m->str + m->str_len <= p + len, "string outside the payload");
  if (m->value_len > 0)
    FUZZ_CHECK(m->value >= p && m->value + m->value_len <= p + len, "value outside the payload");
  FUZZ_CHECK(m->value_len <= HVD_RDV_MAX_PAYLOAD, "value of %zu bytes", m->value_len);
  switch (m->type) {
  case HVD_RDV_HELLO:
    FUZZ_CHECK(m->str_len <= HVD_RDV_MAX_TOKEN_WIRE, "token of %zu bytes", m->str_len);
    break;
  case HVD_RDV_PUT: case HVD_RDV_GET: case HVD_RDV_VALUE: case HVD_RDV_NOT_FOUND:
  case HVD_RDV_BARRIER: case HVD_RDV_BARRIER_OK:
    FUZZ_CHECK(m->str_len <= HVD_RDV_MAX_KEY, "key of %zu bytes", m->str_len);
    break;
  case HVD_RDV_HELLO_OK: case HVD_RDV_BYE:
    FUZZ_CHECK(len == 0, "%zu payload bytes in an empty frame", len);
    break;
  default:
    break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hvd_rdv_buf_t out;
  hvd_rdv_buf_init(&out);
  while (size >= HVD_RDV_HEADER_SIZE) {
    hvd_rdv_header_t h;
    hvd_err_t e = {{0}};
    if (hvd_rdv_decode_header(data, &h, &e) != HVD_OK) {
      FUZZ_CHECK(e.msg[0] != '\0', "header refused without a reason");
      break;
    }
    FUZZ_CHECK(h.length <= HVD_RDV_MAX_PAYLOAD, "length %u passed the header check",
               (unsigned)h.length);
    if (h.length > size - HVD_RDV_HEADER_SIZE) break; /* truncated */
    const uint8_t *payload = data + HVD_RDV_HEADER_SIZE;
    hvd_rdv_msg_t m;
    if (hvd_rdv_msg_decode(h.type, h.length ? payload : NULL, h.length, &m, &e) != HVD_OK) {
      FUZZ_CHECK(e.msg[0] != '\0', "%u byte payload of type %u refused without a reason",
                 (unsigned)h.length, (unsigned)h.type);
      break;
    }
    FUZZ_CHECK(m.type == h.type, "type %u decoded as %u", (unsigned)h.type, (unsigned)m.type);
    check_bounds(&m, payload, h.length);

    out.len = 0;
    out.start = 0;
    hvd_status_t st = hvd_rdv_msg_encode(&out, &m);
    FUZZ_CHECK(st == HVD_OK, "re-encoding a decoded %u frame failed: %d", (unsigned)h.type,
               (int)st);
    size_t flen = HVD_RDV_HEADER_SIZE + h.length;
    FUZZ_CHECK(out.len == flen, "re-encoded frame of type %u is %zu bytes, was %zu",
               (unsigned)h.type, out.len, flen);
    FUZZ_CHECK(memcmp(out.data, data, flen) == 0, "re-encoded frame of type %u differs",
               (unsigned)h.type);

    /* The decoded copy decodes to the same message. */
    hvd_rdv_msg_t m2;
    st = hvd_rdv_msg_decode(h.type, h.length ? out.data + HVD_RDV_HEADER_SIZE : NULL, h.length,
                            &m2, NULL);
    FUZZ_CHECK(st == HVD_OK && m2.str_len == m.str_len && m2.value_len == m.value_len &&
                   m2.rank == m.rank && m2.size == m.size && m2.timeout_ms == m.timeout_ms,
               "second decode of type %u differs", (unsigned)h.type);

    data += flen;
    size -= flen;
  }
  hvd_rdv_buf_free(&out);
  return 0;
}
