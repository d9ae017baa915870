/*
 * Algorithm selection (collectives/select.c), alone: names round-trip, each
 * collective accepts exactly its algorithms, the table gives every collective an
 * algorithm it can run for every size and rank count, and the measured thresholds
 * (docs/performance.md) sit where the table says.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "collectives/select.h"

Test(select, names_round_trip) {
  for (int a = 0; a < HVD_ALGO_COUNT; a++) {
    const char *name = hvd_algo_name((hvd_algo_t)a);
    cr_assert_eq(hvd_algo_parse(name), a, "%s", name);
  }
  cr_assert_eq(hvd_algo_parse("BRUCK"), HVD_ALGO_BRUCK);
  cr_assert_eq(hvd_algo_parse("Scatter_Ring"), HVD_ALGO_SCATTER_RING);
  cr_assert_eq(hvd_algo_parse("binomial"), -1);
  cr_assert_eq(hvd_algo_parse(""), -1);
  cr_assert_str_eq(hvd_algo_name((hvd_algo_t)-1), "unknown");
}

Test(select, supported_matches_choices) {
  for (int k = 0; k < HVD_COLL_KIND_COUNT; k++) {
    const char *choices = hvd_algo_choices((hvd_coll_kind_t)k);
    cr_assert(hvd_algo_supported((hvd_coll_kind_t)k, HVD_ALGO_AUTO));
    for (int a = 0; a < HVD_ALGO_COUNT; a++) {
      /* listed as a whole word iff supported */
      const char *name = hvd_algo_name((hvd_algo_t)a);
      size_t len = strlen(name);
      int listed = 0;
      for (const char *p = choices; (p = strstr(p, name)) != NULL; p += len)
        if ((p == choices || p[-1] == ' ') && (p[len] == ',' || p[len] == '\0')) listed = 1;
      cr_assert_eq(hvd_algo_supported((hvd_coll_kind_t)k, (hvd_algo_t)a), listed,
                   "collective %d algorithm %s (choices: %s)", k, name, choices);
    }
  }
  cr_assert(hvd_algo_supported(HVD_COLL_ALLGATHER, HVD_ALGO_BRUCK));
  cr_assert(!hvd_algo_supported(HVD_COLL_ALLREDUCE, HVD_ALGO_BRUCK));
  cr_assert(!hvd_algo_supported(HVD_COLL_ALLGATHER, HVD_ALGO_TREE));
  cr_assert(hvd_algo_supported(HVD_COLL_BROADCAST, HVD_ALGO_SCATTER_RING));
  cr_assert(!hvd_algo_supported(HVD_COLL_BROADCAST, HVD_ALGO_RING));
}

Test(select, table_always_gives_a_runnable_algorithm) {
  static const hvd_coll_kind_t kinds[] = {HVD_COLL_ALLREDUCE, HVD_COLL_ALLGATHER,
                                          HVD_COLL_BROADCAST};
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
    for (int n = 1; n <= 300; n++)
      for (size_t b = 0; b < ((size_t)1 << 40); b = b * 2 + 1)
        for (int remote = 0; remote <= 1; remote++) {
          hvd_algo_t a = hvd_algo_select(kinds[k], b, n, remote);
          cr_assert(a != HVD_ALGO_AUTO && hvd_algo_supported(kinds[k], a),
                    "collective %d, %zu bytes, %d ranks: %s", kinds[k], b, n,
                    hvd_algo_name(a));
        }
}

Test(select, thresholds) {
  /* allgather: gathered total */
  cr_assert_eq(hvd_algo_select(HVD_COLL_ALLGATHER, 64, 2, 0), HVD_ALGO_RING);
  cr_assert_eq(hvd_algo_select(HVD_COLL_ALLGATHER, 16384, 3, 0), HVD_ALGO_BRUCK);
  cr_assert_eq(hvd_algo_select(HVD_COLL_ALLGATHER, 16385, 3, 0), HVD_ALGO_RING);
  cr_assert_eq(hvd_algo_select(HVD_COLL_ALLGATHER, 1 << 20, 4, 0), HVD_ALGO_BRUCK);
  cr_assert_eq(hvd_algo_select(HVD_COLL_ALLGATHER, (1 << 20) + 1, 4, 1), HVD_ALGO_RING);
  cr_assert_eq(hvd_algo_select(HVD_COLL_ALLGATHER, 0, 64, 1), HVD_ALGO_BRUCK);
  /* broadcast */
  cr_assert_eq(hvd_algo_select(HVD_COLL_BROADCAST, 1 << 30, 2, 0), HVD_ALGO_TREE);
  cr_assert_eq(hvd_algo_select(HVD_COLL_BROADCAST, 2 << 20, 5, 0), HVD_ALGO_TREE);
  cr_assert_eq(hvd_algo_select(HVD_COLL_BROADCAST, (2 << 20) + 1, 3, 0),
               HVD_ALGO_SCATTER_RING);
  cr_assert_eq(hvd_algo_select(HVD_COLL_BROADCAST, 0, 1, 0), HVD_ALGO_TREE);
}

/* The HVD_*_ALGO_CHOICES texts (what the settings table accepts) list exactly the
 * algorithms hvd_algo_supported allows for each collective. */
Test(select, choices_text_matches_support) {
  static const struct {
    hvd_coll_kind_t coll;
    const char *text;
  } c[] = {{HVD_COLL_ALLREDUCE, HVD_ALLREDUCE_ALGO_CHOICES},
           {HVD_COLL_BROADCAST, HVD_BROADCAST_ALGO_CHOICES},
           {HVD_COLL_ALLGATHER, HVD_ALLGATHER_ALGO_CHOICES}};
  for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
    cr_assert_str_eq(hvd_algo_choices(c[i].coll), c[i].text);
    for (int a = 0; a < HVD_ALGO_COUNT; a++) {
      const char *name = hvd_algo_name((hvd_algo_t)a);
      size_t len = strlen(name);
      int listed = 0;
      for (const char *p = c[i].text; (p = strstr(p, name)) != NULL; p += len)
        if ((p == c[i].text || p[-1] == ' ') && (p[len] == ',' || p[len] == '\0')) listed = 1;
      cr_assert_eq(listed, hvd_algo_supported(c[i].coll, (hvd_algo_t)a), "%s in \"%s\"", name,
                   c[i].text);
    }
  }
}
