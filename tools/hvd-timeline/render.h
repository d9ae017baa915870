/*
 * hvd-timeline render: a picture of a trace's tensor lanes.
 */
#ifndef HVD_TIMELINE_RENDER_H
#define HVD_TIMELINE_RENDER_H

#include "trace.h"

/* Write a self-contained picture of t to path: SVG (svg != 0) or HTML with inline SVG
 * and a little JavaScript for hover details. width in pixels (the HTML scales to the
 * browser window). Only [from_ms, to_ms] after the first event is drawn (to_ms < 0:
 * to the end). 0 on success, else 1 with a message on stderr. */
int render(const trace_t *t, const char *path, int svg, int width, double from_ms, double to_ms);

#endif
