/* SPDX-License-Identifier: MIT */
/* awbench.c: libawait's benchmarks.  Each figure is measured next to raw
 * libevent doing the same work in the same run (rounds alternate between
 * the two; the median of each side is kept) and reported as a ratio.
 * This file is the driver (options, the table, the rounds); the
 * benchmarks are in tools/bench/, one file per module, each registering
 * its table (bench.h).
 *
 *   awbench [--json] [--rounds N] [--only NAME]
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "await.h"
#include "bench/bench.h"

static int rounds = 5;

/* tools/bench/udp.c */
extern const struct bench_module bench_udp_module;

/* The modules, in the order of the table. */
static const struct bench_module *const modules[] = {
    &bench_loop_module, &bench_future_module,    &bench_task_module,
    &bench_sync_module, &bench_net_module,       &bench_multiloop_module,
    &bench_executor_module, &bench_udp_module,
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

static void
print_row(const struct bench *bn, double v, double base, int json, int first)
{
    if (json) {
        printf("%s\n  \"%s\": {\"value\": %.3f, \"unit\": \"%s\", ",
               first ? "" : ",", bn->name, v, bn->unit);
        if (bn->raw != NULL)
            printf("\"baseline\": %.3f, \"ratio\": %.4f}", base, v / base);
        else
            printf("\"baseline\": null, \"ratio\": null}");
    } else if (bn->raw != NULL) {
        printf("%-18s %14.1f %14.1f %8.3f %-9s %s\n", bn->name, v, base,
               v / base, bn->unit, bn->target);
    } else {
        printf("%-18s %14.*f %14s %8s %-9s %s\n", bn->name, v < 10 ? 3 : 1,
               v, "-", "-", bn->unit, bn->target);
    }
    fflush(stdout);
}

static void
usage(void)
{
    printf("Usage: awbench [--json] [--rounds N] [--only NAME]\n"
           "libawait's benchmarks, each next to raw libevent doing "
           "the same work.\n"
           "\n"
           "  --json       one JSON object instead of a table\n"
           "  --rounds N   rounds per benchmark (default 5; the "
           "median is kept)\n"
           "  --only NAME  run one benchmark\n"
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
    const char *only = NULL;
    int json = 0, first = 1, i;
    size_t m, b;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--help") == 0) {
            usage();
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            version();
            return 0;
        } else {
            fprintf(stderr,
                    "Usage: awbench [--json] [--rounds N] [--only NAME]\n"
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
               "libevent", "ratio", "unit", "target");
    for (m = 0; m < sizeof(modules) / sizeof(modules[0]); m++) {
        for (b = 0; b < modules[m]->n; b++) {
            const struct bench *bn = &modules[m]->benches[b];
            double v, base;

            if (only != NULL && strcmp(only, bn->name) != 0)
                continue;
            run_bench(bn, &v, &base);
            print_row(bn, v, base, json, first);
            first = 0;
        }
    }
    if (json)
        printf("\n}\n");
    return 0;
}
