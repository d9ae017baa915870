/*
 * runtime/config: the settings table and its parser. Defaults, each value type
 * (bytes with K/M/G suffixes, bool spellings, doubles, integer ranges, log levels,
 * strings), rejections with a message naming the variable, the value and the range,
 * and the HOROVOD_* aliases. Criterion runs every test in its own process, so
 * setenv/unsetenv here cannot leak into other tests; each test starts from an
 * environment with none of the table's variables set.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/config.h"

static void clean_env(void) {
  size_t n;
  const hvd_config_field_t *f = hvd_config_fields(&n);
  for (size_t i = 0; i < n; i++) {
    unsetenv(f[i].name);
    if (f[i].alias) unsetenv(f[i].alias);
  }
}

TestSuite(config, .init = clean_env);

static const hvd_config_field_t *field(const char *name) {
  size_t n;
  const hvd_config_field_t *f = hvd_config_fields(&n);
  for (size_t i = 0; i < n; i++)
    if (strcmp(f[i].name, name) == 0) return &f[i];
  cr_assert_fail("no field %s", name);
  return NULL;
}

static hvd_config_t load_ok(void) {
  hvd_config_t cfg;
  hvd_err_t err = {{0}};
  hvd_status_t rc = hvd_config_load(&cfg, &err);
  cr_assert_eq(rc, HVD_OK, "hvd_config_load: %d %s", rc, err.msg);
  return cfg;
}

/* var=value must be rejected; returns the message. */
static const char *load_bad(const char *var, const char *value) {
  static hvd_err_t err;
  memset(&err, 0, sizeof err);
  setenv(var, value, 1);
  hvd_config_t cfg;
  hvd_status_t rc = hvd_config_load(&cfg, &err);
  unsetenv(var);
  cr_assert_eq(rc, HVD_ERR_INVALID_PARAM, "%s=\"%s\" accepted (rc %d)", var, value, rc);
  cr_assert(strstr(err.msg, var) != NULL, "message \"%s\" does not name %s", err.msg, var);
  return err.msg;
}

static void has(const char *text, const char *needle) {
  cr_assert(strstr(text, needle) != NULL, "\"%s\" lacks \"%s\"", text, needle);
}

static hvd_config_t with(const char *var, const char *value) {
  setenv(var, value, 1);
  hvd_config_t cfg = load_ok();
  unsetenv(var);
  return cfg;
}

static void fmt(const hvd_config_t *cfg, const char *name, const char *want) {
  char buf[HVD_CFG_STR_MAX + 16];
  hvd_config_format(cfg, field(name), buf, sizeof buf);
  cr_assert_str_eq(buf, want, "%s formats as \"%s\", want \"%s\"", name, buf, want);
}

Test(config, table_is_well_formed) {
  size_t n;
  const hvd_config_field_t *f = hvd_config_fields(&n);
  cr_assert_geq(n, 10);
  for (size_t i = 0; i < n; i++) {
    cr_assert(strncmp(f[i].name, "HVD_", 4) == 0, "%s", f[i].name);
    if (f[i].alias) cr_assert(strncmp(f[i].alias, "HOROVOD_", 8) == 0, "%s", f[i].alias);
    cr_assert(f[i].help && f[i].help[0], "%s has no help", f[i].name);
    cr_assert_not_null(f[i].def, "%s has no default", f[i].name);
    if (f[i].type == HVD_CFG_INT || f[i].type == HVD_CFG_BYTES || f[i].type == HVD_CFG_DOUBLE)
      cr_assert_leq(f[i].min, f[i].max, "%s", f[i].name);
    cr_assert_lt(f[i].offset, sizeof(hvd_config_t));
    for (size_t j = 0; j < i; j++) {
      cr_assert(strcmp(f[i].name, f[j].name) != 0, "duplicate %s", f[i].name);
      cr_assert(f[i].offset != f[j].offset, "%s and %s share a member", f[i].name, f[j].name);
    }
  }
}

Test(config, defaults) {
  hvd_config_t c = load_ok();
  cr_assert_eq(c.log_level, 3, "warning");
  cr_assert_str_eq(c.ofi_provider, "");
  cr_assert_str_eq(c.ofi_iface, "");
  cr_assert_eq(c.ofi_max_msg_size, 0);
  cr_assert_eq(c.start_timeout_s, 60);
  cr_assert_eq(c.shutdown_timeout_s, 30);
  cr_assert_eq(c.transport_timeout_s, 30);
  cr_assert_eq(c.fusion_threshold, 128l * 1024 * 1024);
  cr_assert_eq(c.cycle_time_ms, 1);
  cr_assert_eq(c.cache_capacity, 1024);
  cr_assert_eq(c.stall_warning_s, 60);
  cr_assert_eq(c.stall_shutdown_s, 0);
  cr_assert_eq(c.stall_check_disable, 0);
  cr_assert_eq(c.spin_us, 200);
  cr_assert_str_eq(c.allreduce_algo, "auto");
  fmt(&c, "HVD_LOG_LEVEL", "warning");
  fmt(&c, "HVD_FUSION_THRESHOLD", "134217728");
  fmt(&c, "HVD_CYCLE_TIME", "1");
  fmt(&c, "HVD_STALL_CHECK_DISABLE", "0");
  fmt(&c, "HVD_ALLREDUCE_ALGO", "auto");
  /* Every default formats back to something that parses to the same value. */
  size_t n;
  const hvd_config_field_t *f = hvd_config_fields(&n);
  for (size_t i = 0; i < n; i++) {
    char buf[HVD_CFG_STR_MAX + 16];
    hvd_config_format(&c, &f[i], buf, sizeof buf);
    if (buf[0] == '\0') continue; /* empty means unset */
    setenv(f[i].name, buf, 1);
    hvd_config_t d = load_ok();
    unsetenv(f[i].name);
    cr_assert(memcmp(&c, &d, sizeof c) == 0, "%s=%s does not round-trip", f[i].name, buf);
  }
}

Test(config, bytes_with_suffixes) {
  struct {
    const char *in;
    long want;
  } ok[] = {
      {"0", 0},
      {"1", 1},
      {"1024", 1024},
      {"1K", 1024},
      {"1k", 1024},
      {"1KB", 1024},
      {"1KiB", 1024},
      {"1kib", 1024},
      {"2M", 2l << 20},
      {"64MB", 64l << 20},
      {"64MiB", 64l << 20},
      {"1G", 1l << 30},
      {"1.5K", 1536},
      {"0.5M", 512l * 1024},
      {"0.3K", 307}, /* fractions of a byte are dropped */
      {"16G", 16l << 30}, /* the maximum */
      {"17179869184", 17179869184l},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    hvd_config_t c = with("HVD_FUSION_THRESHOLD", ok[i].in);
    cr_assert_eq(c.fusion_threshold, ok[i].want, "\"%s\" -> %ld, want %ld", ok[i].in, c.fusion_threshold,
                 ok[i].want);
  }
  const char *bad[] = {"17G", "17179869185", "-1", "-1K", "abc", "K", "1T", "1KK", "1 K", "1K ",
                       "1Kb2", "nan", "inf", "1e40", "16.5G", "1MiBx", "0xg"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *e = load_bad("HVD_FUSION_THRESHOLD", bad[i]);
    has(e, bad[i]);
    has(e, "[0, 17179869184]");
    has(e, "K/M/G");
  }
  /* the other bytes field has its own range */
  cr_assert_eq(with("HVD_OFI_MAX_MSG_SIZE", "8M").ofi_max_msg_size, 8l << 20);
  has(load_bad("HVD_OFI_MAX_MSG_SIZE", "2048G"), "1099511627776");
}

Test(config, bool_spellings) {
  const char *yes[] = {"1", "true", "TRUE", "True", "yes", "YES", "on", "On"};
  const char *no[] = {"0", "false", "FALSE", "no", "No", "off", "OFF"};
  for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
    cr_assert_eq(with("HVD_STALL_CHECK_DISABLE", yes[i]).stall_check_disable, 1, "%s", yes[i]);
  for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
    setenv("HVD_STALL_CHECK_DISABLE", "1", 1); /* make sure the value is really set */
    hvd_config_t c = with("HVD_STALL_CHECK_DISABLE", no[i]);
    cr_assert_eq(c.stall_check_disable, 0, "%s", no[i]);
  }
  const char *bad[] = {"2", "-1", "y", "n", "tru", "enable", "yes!", " 1", "1 ", "10"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *e = load_bad("HVD_STALL_CHECK_DISABLE", bad[i]);
    has(e, "true");
    has(e, "off");
  }
}

Test(config, doubles_in_range) {
  cr_assert_eq(with("HVD_CYCLE_TIME", "2.5").cycle_time_ms, 2.5);
  cr_assert_eq(with("HVD_CYCLE_TIME", "0").cycle_time_ms, 0);
  cr_assert_eq(with("HVD_CYCLE_TIME", "10000").cycle_time_ms, 10000);
  cr_assert_eq(with("HVD_CYCLE_TIME", "1e3").cycle_time_ms, 1000);
  cr_assert_eq(with("HVD_CYCLE_TIME", ".25").cycle_time_ms, 0.25);
  cr_assert_eq(with("HVD_START_TIMEOUT", "0.1").start_timeout_s, 0.1);
  cr_assert_eq(with("HVD_START_TIMEOUT", "86400").start_timeout_s, 86400);
  cr_assert_eq(with("HVD_STALL_CHECK_TIME_SECONDS", "0.5").stall_warning_s, 0.5);
  cr_assert_eq(with("HVD_STALL_SHUTDOWN_TIME_SECONDS", "120").stall_shutdown_s, 120);
  cr_assert_eq(with("HVD_SPIN_US", "0").spin_us, 0);
  const char *bad[] = {"10000.5", "-1", "-0.001", "abc", "1ms", "nan", "NaN", "inf", "-inf", "1e10", "", "2,5"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (bad[i][0] == '\0') continue; /* empty = unset, tested elsewhere */
    const char *e = load_bad("HVD_CYCLE_TIME", bad[i]);
    has(e, "[0, 10000]");
  }
  has(load_bad("HVD_START_TIMEOUT", "0.09"), "[0.1, 86400]");
  has(load_bad("HVD_START_TIMEOUT", "0"), "[0.1, 86400]");
  has(load_bad("HVD_SHUTDOWN_TIMEOUT_SECONDS", "86401"), "[0, 86400]");
  cr_assert_eq(with("HVD_TRANSPORT_TIMEOUT_SECONDS", "0").transport_timeout_s, 0);
  cr_assert_eq(with("HVD_TRANSPORT_TIMEOUT_SECONDS", "2.5").transport_timeout_s, 2.5);
  cr_assert_eq(with("HOROVOD_GLOO_TIMEOUT_SECONDS", "45").transport_timeout_s, 45);
  has(load_bad("HVD_TRANSPORT_TIMEOUT_SECONDS", "-1"), "[0, 86400]");
}

Test(config, integers_in_range) {
  cr_assert_eq(with("HVD_CACHE_CAPACITY", "0").cache_capacity, 0);
  cr_assert_eq(with("HVD_CACHE_CAPACITY", "1").cache_capacity, 1);
  cr_assert_eq(with("HVD_CACHE_CAPACITY", "65536").cache_capacity, 65536);
  cr_assert_eq(with("HVD_CACHE_CAPACITY", "+7").cache_capacity, 7);
  const char *bad[] = {"65537", "-1", "1.5", "12abc", "0x10", "1e3", "99999999999999999999999",
                       "-99999999999999999999999", "abc", "1K", "5 "};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *e = load_bad("HVD_CACHE_CAPACITY", bad[i]);
    has(e, "[0, 65536]");
    has(e, "integer");
  }
}

Test(config, log_levels) {
  struct {
    const char *in;
    long want;
  } ok[] = {{"trace", 0}, {"debug", 1}, {"DEBUG", 1}, {"info", 2},   {"warning", 3},
            {"warn", 3},  {"WARN", 3},  {"error", 4}, {"fatal", 5}, {"Fatal", 5}};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
    cr_assert_eq(with("HVD_LOG_LEVEL", ok[i].in).log_level, ok[i].want, "%s", ok[i].in);
  hvd_config_t c = with("HVD_LOG_LEVEL", "error");
  fmt(&c, "HVD_LOG_LEVEL", "error");
  const char *bad[] = {"verbose", "3", "warnings", "err", " info"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *e = load_bad("HVD_LOG_LEVEL", bad[i]);
    has(e, "trace");
    has(e, "fatal");
  }
}

Test(config, strings) {
  char v[HVD_CFG_STR_MAX + 1];
  memset(v, 'p', sizeof v);
  v[HVD_CFG_STR_MAX - 1] = '\0';
  hvd_config_t c = with("HVD_OFI_PROVIDER", v);
  cr_assert_eq(strlen(c.ofi_provider), HVD_CFG_STR_MAX - 1);
  cr_assert_str_eq(with("HVD_OFI_PROVIDER", "verbs;ofi_rxm").ofi_provider, "verbs;ofi_rxm");
  cr_assert_str_eq(with("HVD_ALLREDUCE_ALGO", "ring").allreduce_algo, "ring");
  v[HVD_CFG_STR_MAX - 1] = 'p';
  v[HVD_CFG_STR_MAX] = '\0';
  const char *e = load_bad("HVD_OFI_PROVIDER", v);
  has(e, "256");
  cr_assert_lt(strlen(e), HVD_ERR_MSG_MAX, "the message stays bounded");
}

Test(config, empty_value_means_unset) {
  setenv("HVD_CACHE_CAPACITY", "", 1);
  cr_assert_eq(load_ok().cache_capacity, 1024);
  setenv("HVD_ALLREDUCE_ALGO", "", 1);
  cr_assert_str_eq(load_ok().allreduce_algo, "auto");
}

Test(config, message_names_variable_value_and_range) {
  const char *e = load_bad("HVD_CACHE_CAPACITY", "70000");
  has(e, "HVD_CACHE_CAPACITY");
  has(e, "70000");
  has(e, "[0, 65536]");
  /* the first bad variable in table order is reported, the load stops there */
  setenv("HVD_CACHE_CAPACITY", "-5", 1);
  e = load_bad("HVD_FUSION_THRESHOLD", "lots");
  has(e, "HVD_FUSION_THRESHOLD");
}

Test(config, horovod_aliases) {
  size_t n;
  const hvd_config_field_t *f = hvd_config_fields(&n);
  int aliases = 0;
  for (size_t i = 0; i < n; i++) {
    if (f[i].alias == NULL) continue;
    aliases++;
    /* a value that parses for the field's type and differs from the default */
    const char *v1, *v2, *badv;
    switch (f[i].type) {
    case HVD_CFG_LOGLEVEL: v1 = "debug", v2 = "error", badv = "loud"; break;
    case HVD_CFG_BOOL: v1 = "1", v2 = "0", badv = "maybe"; break;
    case HVD_CFG_STRING: v1 = "alias-value", v2 = "hvd-value", badv = NULL; break;
    default: v1 = "3", v2 = "7", badv = "x"; break;
    }
    hvd_config_t def = load_ok();
    char want1[HVD_CFG_STR_MAX], want2[HVD_CFG_STR_MAX], got[HVD_CFG_STR_MAX];
    /* alias alone */
    hvd_config_t c = with(f[i].alias, v1);
    hvd_config_format(&c, &f[i], got, sizeof got);
    hvd_config_format(&def, &f[i], want2, sizeof want2);
    cr_assert_str_neq(got, want2, "%s=%s had no effect", f[i].alias, v1);
    snprintf(want1, sizeof want1, "%s", got);
    /* both: the HVD_ name wins */
    setenv(f[i].alias, v1, 1);
    c = with(f[i].name, v2);
    hvd_config_format(&c, &f[i], got, sizeof got);
    cr_assert_str_neq(got, want1, "%s did not win over %s", f[i].name, f[i].alias);
    /* HVD_ set but empty: the alias is used */
    setenv(f[i].name, "", 1);
    c = load_ok();
    hvd_config_format(&c, &f[i], got, sizeof got);
    cr_assert_str_eq(got, want1, "%s empty: alias not used", f[i].name);
    unsetenv(f[i].name);
    unsetenv(f[i].alias);
    /* a bad alias value is reported under the alias's name */
    if (badv) {
      const char *e = load_bad(f[i].alias, badv);
      has(e, badv);
      /* a bad alias is ignored when the HVD_ name is set */
      setenv(f[i].alias, badv, 1);
      setenv(f[i].name, v2, 1);
      load_ok();
      unsetenv(f[i].name);
      unsetenv(f[i].alias);
    }
  }
  cr_assert_geq(aliases, 8);
  /* the Horovod names users know */
  cr_assert_eq(with("HOROVOD_FUSION_THRESHOLD", "32M").fusion_threshold, 32l << 20);
  cr_assert_eq(with("HOROVOD_CYCLE_TIME", "3.5").cycle_time_ms, 3.5);
  cr_assert_eq(with("HOROVOD_CACHE_CAPACITY", "0").cache_capacity, 0);
  cr_assert_eq(with("HOROVOD_STALL_CHECK_TIME_SECONDS", "5").stall_warning_s, 5);
  cr_assert_eq(with("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", "9").stall_shutdown_s, 9);
  cr_assert_eq(with("HOROVOD_STALL_CHECK_DISABLE", "1").stall_check_disable, 1);
  cr_assert_eq(with("HOROVOD_LOG_LEVEL", "info").log_level, 2);
  cr_assert_str_eq(with("HOROVOD_GLOO_IFACE", "eth1").ofi_iface, "eth1");
}

Test(config, numbers_are_plain_decimal) {
  /* strtod/strtol would take these; the table does not */
  const char *bad[] = {" 5", "\t5", "0x10", "0X1p3", "inf", "infinity", "nan", "+inf", "1e999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    has(load_bad("HVD_CYCLE_TIME", bad[i]), "[0, 10000]");
    has(load_bad("HVD_FUSION_THRESHOLD", bad[i]), "[0, 17179869184]");
    has(load_bad("HVD_CACHE_CAPACITY", bad[i]), "[0, 65536]");
  }
  cr_assert_eq(with("HVD_CYCLE_TIME", "+2.5e1").cycle_time_ms, 25);
  cr_assert_eq(with("HVD_FUSION_THRESHOLD", "+1e3").fusion_threshold, 1000);
}

Test(config, choices) {
  size_t n, with_choices = 0;
  const hvd_config_field_t *f = hvd_config_fields(&n);
  for (size_t i = 0; i < n; i++) {
    if (f[i].choices == NULL) continue;
    cr_assert_eq(f[i].type, HVD_CFG_STRING, "%s: choices on a non-string", f[i].name);
    with_choices++;
    /* the default is a choice; so is every listed word, in any case; nothing else */
    char list[HVD_CFG_STR_MAX];
    snprintf(list, sizeof list, "%s", f[i].choices);
    cr_assert(strstr(f[i].choices, f[i].def) != NULL, "%s default", f[i].name);
    for (char *save, *w = strtok_r(list, ", ", &save); w; w = strtok_r(NULL, ", ", &save)) {
      with(f[i].name, w);
      for (char *c = w; *c; c++) *c = (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
      with(f[i].name, w);
    }
    has(load_bad(f[i].name, "bogus"), f[i].choices);
    load_bad(f[i].name, "auto,");
    load_bad(f[i].name, " auto");
  }
  cr_assert_geq(with_choices, 4, "the HVD_*_ALGO settings and HVD_REDUCE_ISA");
}

Test(config, check_for_launchers) {
  char exp[256] = "";
  cr_assert_eq(hvd_config_check("HVD_CYCLE_TIME", "2.5", exp, sizeof exp), 1);
  cr_assert_eq(hvd_config_check("HOROVOD_CYCLE_TIME", "-1", exp, sizeof exp), 0);
  has(exp, "[0, 10000]");
  cr_assert_eq(hvd_config_check("HVD_CACHE_CAPACITY", "1e3", exp, sizeof exp), 0);
  has(exp, "integer");
  cr_assert_eq(hvd_config_check("HVD_ALLREDUCE_ALGO", "tree", NULL, 0), 1);
  cr_assert_eq(hvd_config_check("HVD_ALLREDUCE_ALGO", "bruck", exp, sizeof exp), 0);
  has(exp, "auto, ring");
  cr_assert_eq(hvd_config_check("HVD_TIMELINE", "", NULL, 0), 1, "empty = unset");
  cr_assert_eq(hvd_config_check("HVD_NO_SUCH_SETTING", "1", NULL, 0), -1);
}
