/* SPDX-License-Identifier: MIT */
/* awbench.c: libawait's benchmarks.  Each figure is measured next to raw
 * libevent doing the same work in the same run (rounds alternate between
 * the two; the median of each side is kept) and reported as a ratio.
 * This file is the driver (options, the table, the rounds); the
 * benchmarks are in tools/bench/, one file per module, each registering
 * its table (bench.h).  --svg draws the ratios as a bar chart.
 *
 *   awbench [--json] [--rounds N] [--only NAME] [--svg FILE]
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "await.h"
#include "bench/bench.h"

static int rounds = 5;


/* The modules, in the order of the table. */
static const struct bench_module *const modules[] = {
    &bench_loop_module,      &bench_future_module,   &bench_task_module,
    &bench_sync_module,      &bench_net_module,      &bench_http_module,
    &bench_pipeline_module,  &bench_multiloop_module, &bench_executor_module,
    &bench_proc_module,      &bench_udp_module,       &bench_tls_module,
};

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* AWBENCH_SIDE=ours|raw runs one side only (for profiling). */
static int
side_runs(const char *side)
{
    const char *only_side = getenv("AWBENCH_SIDE");

    return only_side == NULL || strcmp(only_side, side) == 0;
}

/* Run bn for the rounds (ours, then raw, in each round): the medians. */
static void
run_bench(const struct bench *bn, double *v, double *base)
{
    double ours[100], raw[100];
    int r;

    for (r = 0; r < rounds; r++) {
        ours[r] = side_runs("ours") ? bn->ours() : NAN;
        raw[r] = bn->raw != NULL && side_runs("raw") ? bn->raw() : NAN;
    }
    *v = median(ours, rounds);
    *base = bn->raw != NULL ? median(raw, rounds) : NAN;
}

/* A table cell: v with prec decimals (-1: 3 under 10, else 1), or n/a (not measured
 * here: no libuv, no perf or strace). */
static void
cell(char *buf, size_t len, double v, int prec)
{
    if (isnan(v))
        snprintf(buf, len, "n/a");
    else
        snprintf(buf, len, "%.*f", prec < 0 ? (v < 10 ? 3 : 1) : prec, v);
}

/* A JSON number, or null for a figure not measured (n/a). */
static void
json_num(const char *key, double v, const char *fmt, const char *end)
{
    printf("\"%s\": ", key);
    if (isnan(v))
        printf("null");
    else
        printf(fmt, v);
    printf("%s", end);
}

static void
print_row(const struct bench *bn, double v, double base, int json, int first)
{
    if (json) {
        printf("%s\n  \"%s\": {", first ? "" : ",", bn->name);
        json_num("value", v, "%.3f", ", ");
        printf("\"unit\": \"%s\", ", bn->unit);
        json_num("baseline", base, "%.3f", ", ");
        json_num("ratio", v / base, "%.4f", "}");
    } else {
        char val[32], bas[32], rat[32];

        cell(val, sizeof(val), v, -1);
        if (bn->raw != NULL) {
            cell(bas, sizeof(bas), base, -1);
            cell(rat, sizeof(rat), v / base, 3);
        } else {
            strcpy(bas, "-");
            strcpy(rat, "-");
        }
        printf("%-18s %14s %14s %8s %-9s %s\n", bn->name, val, bas, rat,
               bn->unit, bn->target);
    }
    fflush(stdout);
}

/* ---- --svg: the ratios as a bar chart ------------------------------------ */

#define MAX_ROWS 128

struct row {
    const struct bench *bn;
    double v, base;
};

static struct row rows[MAX_ROWS];
static int nrows;

/* Whether the figure meets its target: 1, 0, or -1 when the target is
 * not a bound ("(vs 1 loop)") or the figure was not measured. */
static int
target_met(const struct row *r)
{
    char op[3];
    double bound, x;

    if (sscanf(r->bn->target, "ratio %2[<>=] %lf", op, &bound) == 2)
        x = r->v / r->base;
    else if (sscanf(r->bn->target, "%2[<>=] %lf", op, &bound) == 2)
        x = r->v;
    else
        return -1;
    if (isnan(x))
        return -1;
    return strcmp(op, "<=") == 0 ? x <= bound : x >= bound;
}

/* The chart: one bar per figure with a baseline, from the line of ratio 1
 * on a log scale (1/16 to 16); green when the target is met, red when
 * not, grey when the target is not a bound.  Plain SVG 1.1, no script. */
#define SVG_W 800
#define SVG_ROW 18
#define SVG_TOP 56
#define SVG_X0 150 /* the plot: SVG_X0 .. SVG_X0 + SVG_PW */
#define SVG_PW 520
#define SVG_LOG2 4 /* log2 of the scale's ends */

static double
svg_x(double ratio)
{
    double l = log2(ratio);

    if (l < -SVG_LOG2)
        l = -SVG_LOG2;
    if (l > SVG_LOG2)
        l = SVG_LOG2;
    return SVG_X0 + SVG_PW / 2.0 + l * (SVG_PW / 2.0) / SVG_LOG2;
}

static void
svg_axis(FILE *f, int h)
{
    static const char *const labels[] = {"1/16", "1/8", "1/4", "1/2", "1",
                                         "2",    "4",   "8",   "16"};
    int i;

    for (i = -SVG_LOG2; i <= SVG_LOG2; i++) {
        double x = svg_x(pow(2, i));

        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" "
                "stroke=\"%s\"/>\n"
                "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
                x, SVG_TOP - 6, x, h - 10, i == 0 ? "#000" : "#ddd", x,
                SVG_TOP - 10, labels[i + SVG_LOG2]);
    }
}

/* Text for XML: targets have < and >. */
static void
svg_text(FILE *f, const char *t)
{
    for (; *t != '\0'; t++) {
        if (*t == '<')
            fputs("&lt;", f);
        else if (*t == '>')
            fputs("&gt;", f);
        else if (*t == '&')
            fputs("&amp;", f);
        else
            fputc(*t, f);
    }
}

static void
svg_row(FILE *f, const struct row *r, int y)
{
    static const char *const colors[] = {"#999", "#c33", "#393"};
    double ratio = r->v / r->base, x0 = svg_x(1), x;
    int met = target_met(r);

    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s</text>\n",
            SVG_X0 - 8, y + 13, r->bn->name);
    if (isnan(ratio)) {
        fprintf(f, "<text x=\"%.1f\" y=\"%d\">n/a</text>\n", x0 + 4, y + 13);
        return;
    }
    x = svg_x(ratio);
    fprintf(f,
            "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" "
            "fill=\"%s\"/>\n"
            "<text x=\"%d\" y=\"%d\">%.3f  ",
            x < x0 ? x : x0, y + 3, fabs(x - x0) < 1 ? 1 : fabs(x - x0),
            SVG_ROW - 5, colors[met + 1], SVG_X0 + SVG_PW + 8, y + 13, ratio);
    svg_text(f, r->bn->target);
    fputs("</text>\n", f);
}

static int
write_svg(const char *path)
{
    int i, n = 0, h;
    FILE *f;

    for (i = 0; i < nrows; i++)
        n += rows[i].bn->raw != NULL;
    h = SVG_TOP + n * SVG_ROW + 16;
    if ((f = fopen(path, "w")) == NULL) {
        perror(path);
        return 1;
    }
    fprintf(f,
            "<!-- SPDX-License-Identifier: MIT -->\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
            "height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" "
            "font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>\n"
            "<text x=\"%d\" y=\"18\" font-size=\"14\">awbench (libawait %s, "
            "%d rounds): libawait / baseline, log scale; green: target met, "
            "red: not, grey: no bound</text>\n",
            SVG_W + 260, h, SVG_W + 260, h, 10, AW_VERSION_STRING, rounds);
    svg_axis(f, h);
    for (i = 0, n = 0; i < nrows; i++)
        if (rows[i].bn->raw != NULL)
            svg_row(f, &rows[i], SVG_TOP + SVG_ROW * n++);
    fprintf(f, "</svg>\n");
    return fclose(f) != 0;
}

static void
usage(void)
{
    printf("Usage: awbench [--json] [--rounds N] [--only NAME] "
           "[--svg FILE]\n"
           "libawait's benchmarks, each next to raw libevent doing "
           "the same work.\n"
           "\n"
           "  --json       one JSON object instead of a table\n"
           "  --rounds N   rounds per benchmark (default 5; the "
           "median is kept)\n"
           "  --only NAME  run one benchmark\n"
           "  --svg FILE   also draw the ratios as a bar chart (SVG) "
           "in FILE\n"
           "  --help       display this help and exit\n"
           "  --version    output version information and exit\n"
           "\n"
           "Report bugs to: "
           "https://github.com/libawait/libawait/issues\n");
}

static void
version(void)
{
    printf("awbench (libawait) %s\n"
           "Copyright (c) 2026 The libawait authors\n"
           "License MIT: <https://opensource.org/licenses/MIT>.\n"
           "This is free software: you are free to change and "
           "redistribute it.\n",
           AW_VERSION_STRING);
}

int
main(int argc, char **argv)
{
    const char *only = NULL, *svg = NULL;
    int json = 0, first = 1, i;
    size_t m, b;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--svg") == 0 && i + 1 < argc)
            svg = argv[++i];
        else if (strcmp(argv[i], "--help") == 0) {
            usage();
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            version();
            return 0;
        } else {
            fprintf(stderr,
                    "Usage: awbench [--json] [--rounds N] [--only NAME] "
                    "[--svg FILE]\n"
                    "Try 'awbench --help' for more information.\n");
            return 2;
        }
    }
    if (rounds < 1 || rounds > 100)
        rounds = 5;
    if (json)
        printf("{");
    else
        printf("%-18s %14s %14s %8s %-9s %s\n", "benchmark", "libawait",
               "baseline", "ratio", "unit", "target");
    for (m = 0; m < sizeof(modules) / sizeof(modules[0]); m++) {
        for (b = 0; b < modules[m]->n; b++) {
            const struct bench *bn = &modules[m]->benches[b];
            double v, base;

            if (only != NULL && strcmp(only, bn->name) != 0)
                continue;
            run_bench(bn, &v, &base);
            print_row(bn, v, base, json, first);
            first = 0;
            if (nrows < MAX_ROWS)
                rows[nrows++] = (struct row){bn, v, base};
        }
    }
    if (json)
        printf("\n}\n");
    return svg != NULL ? write_svg(svg) : 0;
}
