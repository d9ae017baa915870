/*
 * Rendering a trace as a picture: one row per tensor lane, a colored box per span
 * (phase), "rank N ready" marks as ticks, a legend and a time axis. SVG alone, or an
 * HTML page around the same SVG with a tooltip script. Nothing is loaded from the
 * network.
 *
 * Dense traces stay light: boxes narrower than a pixel are not drawn one by one; per
 * row and pixel column the phase with the most time in them is drawn, runs of equal
 * columns as one box (its tooltip says how many spans it stands for). Ticks closer
 * than a pixel to the previous one are skipped. So the output grows with rows x width,
 * not with the length of the trace.
 */
#include "render.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LABEL_W 250
#define MAX_ROWS 2000
#define LEGEND_W 230 /* a legend entry */

/* ---- text escaping ------------------------------------------------------------------ */

/* XML text or attribute value; at most maxch characters (0 = all), "…" if cut.
 * Control characters (not allowed in XML 1.0) become '?'. */
static void xml_put(FILE *o, const char *s, size_t maxch) {
  size_t ch = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if ((*p & 0xc0) != 0x80) { /* a character starts here */
      if (maxch && ch == maxch) {
        fputs("\xe2\x80\xa6", o);
        return;
      }
      ch++;
    }
    switch (*p) {
    case '&': fputs("&amp;", o); break;
    case '<': fputs("&lt;", o); break;
    case '>': fputs("&gt;", o); break;
    case '"': fputs("&quot;", o); break;
    case '\'': fputs("&#39;", o); break;
    default: fputc(*p < 0x20 ? '?' : *p, o);
    }
  }
}

/* A JavaScript string literal that is safe inside <script>. */
static void js_put(FILE *o, const char *s) {
  fputc('"', o);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') fprintf(o, "\\%c", *p);
    else if (*p < 0x20 || *p == '<' || *p == '>' || *p == '&') fprintf(o, "\\u%04x", *p);
    else fputc(*p, o);
  }
  fputc('"', o);
}

/* ---- colors --------------------------------------------------------------------------- */

/* The color of a phase Horovod/hvd names, or NULL. */
static const char *known_color(const char *name) {
  static const struct {
    const char *prefix, *color;
  } known[] = {
      {"NEGOTIATE", "#f4a261"},     {"QUEUE", "#e9c46a"},         {"MEMCPY_IN", "#90be6d"},
      {"INIT_FUSION", "#b5838d"},   {"MEMCPY_OUT", "#577590"},    {"ALLREDUCE", "#2a9d8f"},
      {"ALLGATHER", "#e76f51"},     {"BROADCAST", "#9b5de5"},     {"REDUCESCATTER", "#00bbf9"},
      {"ALLTOALL", "#f15bb5"},      {"BARRIER", "#6c757d"},       {"JOIN", "#adb5bd"},
      {"WAIT_FOR", "#cdb4db"},      {"ERROR", "#d62828"},
  };
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (strncmp(name, known[i].prefix, strlen(known[i].prefix)) == 0) return known[i].color;
  return NULL;
}

static const char *const palette[] = {"#8ecae6", "#ffb703", "#fb8500", "#023047", "#219ebc",
                                      "#a7c957", "#bc4749", "#6a4c93", "#ff99c8", "#3d405b"};

/* Where a phase comes in a round, for the legend's order. */
static int phase_rank(const char *n) {
  if (strncmp(n, "NEGOTIATE", 9) == 0) return 0;
  if (strcmp(n, "QUEUE") == 0) return 1;
  if (strncmp(n, "INIT_FUSION", 11) == 0 || strncmp(n, "WAIT_FOR", 8) == 0) return 2;
  if (strncmp(n, "MEMCPY_IN", 9) == 0) return 3;
  if (strncmp(n, "MEMCPY_OUT", 10) == 0) return 5;
  return 4;
}

/* ---- the time axis ---------------------------------------------------------------- */

static double nice_step(double range, int want) {
  double raw = range / want, p = pow(10, floor(log10(raw))), m = raw / p;
  return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

static void fmt_time(char *b, size_t n, double us, double step) {
  if (fabs(us) < step * 1e-6) us = 0; /* not "-0" */
  if (step >= 1e6) snprintf(b, n, "%.*f s", step >= 1e6 * 10 ? 0 : 1, us / 1e6);
  else if (step >= 1e3) snprintf(b, n, "%.*f ms", step >= 1e4 ? 0 : step >= 1e3 ? 0 : 1, us / 1e3);
  else snprintf(b, n, "%.*f ms", step >= 100 ? 1 : step >= 10 ? 2 : 3, us / 1e3);
}

/* ---- render ----------------------------------------------------------------------- */

typedef struct ctx {
  FILE *o;
  const trace_t *t;
  int svg;
  const char **phases;
  size_t nphases;
  size_t *lane_row; /* lane index -> row or (size_t)-1 */
  double origin;     /* the trace's first event: times are shown from here */
  double tmin, tmax; /* the window drawn */
  double scale;
  int plot_x, plot_w, row_h, top;
  size_t rects;
  double *col_time; /* [plot_w][nphases]: time of sub-pixel boxes per column and phase */
  unsigned *col_n;  /* [plot_w]: how many */
} rctx_t;

static size_t phase_index(rctx_t *c, const char *name) {
  for (size_t i = 0; i < c->nphases; i++)
    if (strcmp(c->phases[i], name) == 0) return i;
  return (size_t)-1;
}

static double xof(const rctx_t *c, double t) {
  if (t < c->tmin) t = c->tmin;
  if (t > c->tmax) t = c->tmax;
  return c->plot_x + (t - c->tmin) * c->scale;
}

static int in_window(const rctx_t *c, double t0, double t1) { return t1 >= c->tmin && t0 <= c->tmax; }

/* One span, a pixel or wider (or unfinished), as a box. */
static void box(rctx_t *c, const tspan_t *s, size_t ph, size_t row, double x0, double x1) {
  double y = c->top + (double)row * c->row_h + 2 + s->depth * 2;
  double h = c->row_h - 4 - s->depth * 2;
  if (h < 2) h = 2;
  double w = x1 - x0;
  if (w < 0.6) w = 0.6;
  fprintf(c->o, "<rect class=\"p%zu%s\" x=\"%.1f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\"", ph,
          s->closed ? "" : " open", x0, y, w, h);
  if (!c->svg) {
    fprintf(c->o, " data-t=\"%.3f\" data-d=\"%.3f\"", (s->t0 - c->origin) / 1e3, (s->t1 - s->t0) / 1e3);
    if (s->args) {
      char *buf = NULL;
      size_t len = 0;
      FILE *m = open_memstream(&buf, &len);
      if (m) {
        json_write(m, s->args);
        fclose(m);
        fputs(" data-a=\"", c->o);
        xml_put(c->o, buf, 0);
        fputc('"', c->o);
        free(buf);
      }
    }
    fputs("/>", c->o);
  } else {
    fputs("><title>", c->o);
    xml_put(c->o, c->phases[ph], 0);
    fprintf(c->o, ": %.3f ms at %.3f ms", (s->t1 - s->t0) / 1e3, (s->t0 - c->origin) / 1e3);
    if (!s->closed) fputs(" (unfinished)", c->o);
    fputs("</title></rect>", c->o);
  }
  c->rects++;
}

/* A run of pixel columns [c0, c1) whose sub-pixel boxes are mostly phase ph. */
static void column_run(rctx_t *c, size_t row, int c0, int c1, size_t ph, unsigned n) {
  double y = c->top + (double)row * c->row_h + 2, h = c->row_h - 4;
  double t0 = c->tmin + c0 / c->scale, t1 = c->tmin + c1 / c->scale;
  fprintf(c->o, "<rect class=\"p%zu\" x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%.1f\"", ph,
          c->plot_x + c0, y, c1 - c0, h < 2 ? 2 : h);
  if (!c->svg) {
    fprintf(c->o, " data-t=\"%.3f\" data-d=\"%.3f\" data-n=\"%u\" data-m=\"1\"/>", (t0 - c->origin) / 1e3,
            (t1 - t0) / 1e3, n);
  } else {
    fputs("><title>mostly ", c->o);
    xml_put(c->o, c->phases[ph], 0);
    fprintf(c->o, ": %u short spans in %.3f to %.3f ms</title></rect>", n, (t0 - c->origin) / 1e3,
            (t1 - c->origin) / 1e3);
  }
  c->rects++;
}

/* Draw the row's sub-pixel boxes: per column the phase with the most time, runs of
 * equal columns as one box. Clears the columns. */
static void flush_columns(rctx_t *c, size_t row) {
  int run0 = -1;
  size_t run_ph = 0;
  unsigned run_n = 0;
  for (int col = 0; col <= c->plot_w; col++) {
    size_t best = (size_t)-1;
    if (col < c->plot_w && c->col_n[col] > 0) {
      double *tm = &c->col_time[(size_t)col * c->nphases];
      best = 0;
      for (size_t k = 1; k < c->nphases; k++)
        if (tm[k] > tm[best]) best = k;
    }
    if (run0 >= 0 && best != run_ph) {
      column_run(c, row, run0, col, run_ph, run_n);
      run0 = -1;
    }
    if (best != (size_t)-1) {
      if (run0 < 0) {
        run0 = col;
        run_ph = best;
        run_n = 0;
      }
      run_n += c->col_n[col];
      memset(&c->col_time[(size_t)col * c->nphases], 0, c->nphases * sizeof *c->col_time);
      c->col_n[col] = 0;
    }
  }
}

int render(const trace_t *t, const char *path, int svg, int width, double from_ms, double to_ms) {
  rctx_t c = {.t = t, .svg = svg};
  int rc = 1;
  c.phases = calloc(t->nspans + 1, sizeof *c.phases);
  c.lane_row = malloc((t->nlanes + 1) * sizeof *c.lane_row);
  if (c.phases == NULL || c.lane_row == NULL) {
    fprintf(stderr, "hvd-timeline: out of memory\n");
    goto out;
  }
  /* Time range, window, and the phases in it (in order of first appearance). */
  c.tmin = INFINITY;
  c.tmax = -INFINITY;
  for (size_t i = 0; i < t->nspans; i++) {
    const tspan_t *s = &t->spans[i];
    if (s->t0 < c.tmin) c.tmin = s->t0;
    if (s->t1 > c.tmax) c.tmax = s->t1;
  }
  for (size_t i = 0; i < t->ninsts; i++) {
    if (t->insts[i].ts < c.tmin) c.tmin = t->insts[i].ts;
    if (t->insts[i].ts > c.tmax) c.tmax = t->insts[i].ts;
  }
  if (!(c.tmin <= c.tmax)) c.tmin = c.tmax = 0;
  c.origin = c.tmin;
  if (from_ms > 0) c.tmin = c.origin + from_ms * 1e3;
  if (to_ms >= 0 && c.origin + to_ms * 1e3 < c.tmax) c.tmax = c.origin + to_ms * 1e3;
  if (c.tmax - c.tmin < 1) c.tmax = c.tmin + 1;
  for (size_t i = 0; i < t->nspans; i++)
    if (in_window(&c, t->spans[i].t0, t->spans[i].t1) && phase_index(&c, t->spans[i].name) == (size_t)-1)
      c.phases[c.nphases++] = t->spans[i].name;
  for (size_t i = 1; i < c.nphases; i++) /* insertion sort: few phases, stable */
    for (size_t j = i; j > 0 && phase_rank(c.phases[j]) < phase_rank(c.phases[j - 1]); j--) {
      const char *x = c.phases[j];
      c.phases[j] = c.phases[j - 1];
      c.phases[j - 1] = x;
    }
  /* Rows: tensor lanes with something to draw, in lane (sort index) order. */
  size_t rows = 0, hidden = 0;
  int *used = calloc(t->nlanes + 1, sizeof *used);
  if (used == NULL) goto out;
  for (size_t i = 0; i < t->nspans; i++)
    if (in_window(&c, t->spans[i].t0, t->spans[i].t1)) used[t->spans[i].lane] = 1;
  for (size_t i = 0; i < t->ninsts; i++)
    if (!t->insts[i].global && in_window(&c, t->insts[i].ts, t->insts[i].ts)) used[t->insts[i].lane] = 1;
  for (size_t l = 0; l < t->nlanes; l++) {
    c.lane_row[l] = (size_t)-1;
    if (!used[l]) continue;
    if (rows < MAX_ROWS) c.lane_row[l] = rows++;
    else hidden++;
  }
  free(used);
  c.row_h = rows <= 60 ? 18 : rows <= 300 ? 12 : 8;
  c.plot_x = LABEL_W;
  c.plot_w = width - LABEL_W - 40;
  c.scale = c.plot_w / (c.tmax - c.tmin);
  c.col_time = calloc((size_t)c.plot_w * (c.nphases ? c.nphases : 1), sizeof *c.col_time);
  c.col_n = calloc((size_t)c.plot_w, sizeof *c.col_n);
  if (c.col_time == NULL || c.col_n == NULL) {
    fprintf(stderr, "hvd-timeline: out of memory\n");
    goto out;
  }
  int legend_cols = (width - 16) / LEGEND_W;
  int legend_rows = 1 + (int)c.nphases / legend_cols;
  int title_h = 42, legend_h = legend_rows * 18 + 6, axis_h = 26;
  c.top = title_h + legend_h + axis_h;
  int height = c.top + (int)rows * c.row_h + 24;

  if ((c.o = fopen(path, "w")) == NULL) {
    perror(path);
    goto out;
  }
  FILE *o = c.o;
  const char *base = strrchr(t->path, '/') ? strrchr(t->path, '/') + 1 : t->path;
  if (!svg) {
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>hvd timeline: ", o);
    xml_put(o, base, 0);
    fputs("</title>\n<style>\nbody{margin:8px;font:12px sans-serif;background:#fff}\n"
          "#tip{position:fixed;display:none;background:#fffff0;border:1px solid #888;padding:4px 6px;"
          "font:12px monospace;white-space:pre;pointer-events:none;box-shadow:2px 2px 4px #0003}\n"
          "#status{color:#555;margin:2px 0 6px 0}\n"
          "</style></head><body>\n<div id=\"status\">(the script has not run)</div>\n",
          o);
  }
  if (svg)
    fprintf(o, "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"tl\" width=\"%d\" height=\"%d\" ", width,
            height);
  else /* as wide as the window, keeping the proportions */
    fputs("<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"tl\" width=\"100%\" ", o);
  fprintf(o, "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"11\">\n", width, height);
  fputs("<style>rect.open{stroke:#000;stroke-dasharray:2,2;stroke-width:.7}"
        "text.lab{font-size:", o);
  fprintf(o, "%dpx}line.grid{stroke:#ddd}line.rdy{stroke:#333;stroke-width:1;stroke-opacity:.55}", c.row_h >= 12 ? 11 : 7);
  for (size_t i = 0, other = 0; i < c.nphases; i++) {
    const char *col = known_color(c.phases[i]);
    if (col == NULL) col = palette[other++ % (sizeof palette / sizeof palette[0])];
    fprintf(o, ".p%zu{fill:%s}", i, col);
  }
  fputs("</style>\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n", o);

  /* Title. */
  fputs("<text x=\"8\" y=\"18\" font-size=\"15\" font-weight=\"bold\">hvd timeline: ", o);
  xml_put(o, base, 60);
  if (t->rank >= 0) fprintf(o, " (rank %d)", t->rank);
  fputs("</text>\n", o);
  fprintf(o, "<text x=\"8\" y=\"34\" fill=\"#444\">%zu tensors, %.3f to %.3f ms; one row per tensor, a box per phase",
          rows + hidden, (c.tmin - c.origin) / 1e3, (c.tmax - c.origin) / 1e3);
  if (hidden) fprintf(o, "; %zu more rows not shown", hidden);
  for (size_t i = 0; i < t->ninsts; i++)
    if (t->insts[i].global && strcmp(t->insts[i].name, "TIMELINE_TRUNCATED") == 0)
      fputs("; TRUNCATED at the size cap", o);
  for (size_t i = 0; i < t->nev; i++)
    if (strcmp(t->ev[i].name, "DROPPED_EVENTS") == 0) {
      fputs("; some events were dropped", o);
      break;
    }
  fputs("</text>\n", o);

  /* Legend. */
  fputs("<g id=\"legend\">", o);
  for (size_t i = 0; i <= c.nphases; i++) {
    int lx = 8 + (int)(i % (size_t)legend_cols) * LEGEND_W;
    int ly = title_h + (int)(i / (size_t)legend_cols) * 18;
    if (i < c.nphases) {
      fprintf(o, "<rect class=\"p%zu\" x=\"%d\" y=\"%d\" width=\"14\" height=\"11\"/>", i, lx, ly);
      fprintf(o, "<text x=\"%d\" y=\"%d\">", lx + 19, ly + 10);
      xml_put(o, c.phases[i], 28);
      fputs("</text>", o);
    } else {
      fprintf(o, "<line class=\"rdy\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>", lx + 7, ly, lx + 7, ly + 11);
      fprintf(o, "<text x=\"%d\" y=\"%d\">rank N ready (coordinator)</text>", lx + 19, ly + 10);
    }
  }
  fputs("</g>\n", o);

  /* Axis and grid. */
  double step = nice_step(c.tmax - c.tmin, 10);
  int ay = c.top - 6;
  fprintf(o, "<g id=\"axis\"><line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#000\"/>", c.plot_x, ay,
          c.plot_x + c.plot_w, ay);
  for (double v = ceil((c.tmin - c.origin) / step - 1e-9) * step; v <= (c.tmax - c.origin) + step * 1e-9;
       v += step) {
    double x = xof(&c, c.origin + v);
    char lab[32];
    fmt_time(lab, sizeof lab, v, step);
    fprintf(o, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#000\"/>", x, ay - 4, x, ay);
    fprintf(o, "<line class=\"grid\" x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>", x, c.top, x,
            c.top + (int)rows * c.row_h);
    fprintf(o, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>", x, ay - 7, lab);
  }
  /* Cycle starts and other rank-wide marks, on the axis. */
  double lastx = -1e9;
  for (size_t i = 0; i < t->ninsts; i++) {
    const tinst_t *in = &t->insts[i];
    if (!in->global || !in_window(&c, in->ts, in->ts)) continue;
    double x = xof(&c, in->ts);
    int special = strcmp(in->name, "CYCLE_START") != 0 && strcmp(in->name, "TIMELINE_END") != 0;
    if (special) {
      fprintf(o, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#d62828\"><title>", x, ay,
              x, c.top + (int)rows * c.row_h);
      xml_put(o, in->name, 0);
      fputs("</title></line>", o);
    } else if (strcmp(in->name, "CYCLE_START") == 0 && x - lastx >= 2) {
      fprintf(o, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#999\"/>", x, ay, x, ay + 4);
      lastx = x;
    }
  }
  fputs("</g>\n", o);

  /* Rows. */
  fputs("<g id=\"lanes\">\n", o);
  size_t si = 0, ii = 0;
  for (size_t l = 0; l < t->nlanes; l++) {
    while (si < t->nspans && t->spans[si].lane < l) si++;
    while (ii < t->ninsts && t->insts[ii].lane < l) ii++;
    size_t row = c.lane_row[l];
    if (row == (size_t)-1) continue;
    int y = c.top + (int)row * c.row_h;
    fprintf(o, "<g class=\"lane\" data-lane=\"%zu\">", l);
    if (row % 2) fprintf(o, "<rect x=\"0\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#f4f4f4\"/>", y, width, c.row_h);
    const char *name = t->lanes[l].name ? t->lanes[l].name : "";
    if (c.row_h >= 8) {
      fprintf(o, "<text class=\"lab\" x=\"%d\" y=\"%d\"><title>", 8, y + c.row_h - (c.row_h >= 12 ? 4 : 1));
      xml_put(o, name, 0);
      fputs("</title>", o);
      xml_put(o, name, c.row_h >= 12 ? 36 : 48);
      fputs("</text>", o);
    }
    for (size_t k = si; k < t->nspans && t->spans[k].lane == l; k++) {
      const tspan_t *s = &t->spans[k];
      if (!in_window(&c, s->t0, s->t1)) continue;
      size_t ph = phase_index(&c, s->name);
      double x0 = xof(&c, s->t0), x1 = xof(&c, s->t1);
      if (x1 - x0 < 1 && s->closed) { /* into its pixel column */
        int col = (int)(x0 - c.plot_x);
        if (col >= c.plot_w) col = c.plot_w - 1;
        if (col < 0) col = 0;
        c.col_time[(size_t)col * c.nphases + ph] += (s->t1 - s->t0) + 1e-3; /* instants count */
        c.col_n[col]++;
        continue;
      }
      box(&c, s, ph, row, x0, x1);
    }
    flush_columns(&c, row);
    double last = -1e9;
    for (size_t k = ii; k < t->ninsts && t->insts[k].lane == l; k++) {
      const tinst_t *in = &t->insts[k];
      if (in->global || !in_window(&c, in->ts, in->ts)) continue;
      double x = xof(&c, in->ts);
      if (x - last < 1) continue;
      last = x;
      fprintf(o, "<line class=\"rdy\" x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"", x,
              y + c.row_h / 2, x, y + c.row_h);
      if (svg) {
        fputs("><title>", o);
        xml_put(o, in->name, 0);
        fprintf(o, " at %.3f ms</title></line>", (in->ts - c.origin) / 1e3);
      } else {
        fprintf(o, " data-i=\"%.3f\" data-w=\"", (in->ts - c.origin) / 1e3);
        xml_put(o, in->name, 0);
        fputs("\"/>", o);
      }
    }
    fputs("</g>\n", o);
  }
  fputs("</g>\n</svg>\n", o);

  if (!svg) {
    fputs("<div id=\"tip\"></div>\n<script>\n\"use strict\";\nconst PHASES=[", o);
    for (size_t i = 0; i < c.nphases; i++) {
      if (i) fputc(',', o);
      js_put(o, c.phases[i]);
    }
    fputs("];\nconst LANES={", o);
    int firstl = 1;
    for (size_t l = 0; l < t->nlanes; l++) {
      if (c.lane_row[l] == (size_t)-1) continue;
      fprintf(o, "%s%zu:", firstl ? "" : ",", l);
      js_put(o, t->lanes[l].name ? t->lanes[l].name : "");
      firstl = 0;
    }
    fputs("};\n", o);
    fputs("const tip=document.getElementById('tip');\n"
          "const svgEl=document.getElementById('tl');\n"
          "function show(ev,text){tip.textContent=text;tip.style.display='block';\n"
          "  const x=Math.min(ev.clientX+14,window.innerWidth-tip.offsetWidth-4);\n"
          "  tip.style.left=Math.max(0,x)+'px';tip.style.top=(ev.clientY+14)+'px';}\n"
          "svgEl.addEventListener('mousemove',function(ev){\n"
          "  const el=ev.target,g=el.closest?el.closest('g.lane'):null;\n"
          "  if(!g){tip.style.display='none';return;}\n"
          "  const lane=LANES[g.dataset.lane];\n"
          "  if(el.dataset.t!==undefined){\n"
          "    const ph=PHASES[parseInt(el.getAttribute('class').slice(1),10)];\n"
          "    let s=lane+'\\n'+(el.dataset.m?'mostly '+ph+', '+el.dataset.n+' short spans':ph)+\n"
          "      (el.classList.contains('open')?' (unfinished)':'')+'\\n'+\n"
          "      'start '+el.dataset.t+' ms, duration '+el.dataset.d+' ms';\n"
          "    if(el.dataset.a)s+='\\n'+el.dataset.a;\n"
          "    show(ev,s);\n"
          "  }else if(el.dataset.i!==undefined){show(ev,lane+'\\n'+el.dataset.w+' at '+el.dataset.i+' ms');}\n"
          "  else{show(ev,lane);}\n"
          "});\n"
          "svgEl.addEventListener('mouseleave',function(){tip.style.display='none';});\n"
          "const nl=document.querySelectorAll('#lanes g.lane').length;\n"
          "const nb=document.querySelectorAll('#lanes rect[data-t]').length;\n"
          "const st=document.getElementById('status');\n"
          "st.textContent='rendered '+nl+' lanes, '+nb+' boxes, '+PHASES.length+' phases; hover a box for details';\n"
          "st.dataset.lanes=nl;\n"
          "</script>\n</body></html>\n",
          o);
  }
  if (ferror(o) | fclose(o)) {
    fprintf(stderr, "hvd-timeline: error writing %s\n", path);
    goto out;
  }
  printf("rendered %zu rows, %zu boxes, %zu phases into %s\n", rows, c.rects, c.nphases, path);
  rc = 0;
out:
  free(c.col_time);
  free(c.col_n);
  free(c.phases);
  free(c.lane_row);
  return rc;
}
