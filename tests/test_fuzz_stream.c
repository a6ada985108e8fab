/* SPDX-License-Identifier: MIT */
/* test_fuzz_stream.c: the stream readers fuzzed: random bytes written in
 * random chunks through a Unix socket, read with random plans of read,
 * readexactly, readuntil and readline under random limits; each result is
 * checked against a model of the documented rules, and what was read
 * (with what errors left buffered) equals what was written.  `make check`
 * runs a bounded, seeded number of inputs; tests/fuzz_stream.c builds the
 * same body as a libFuzzer target (`make fuzz`). */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifdef AW_FUZZ_LIBFUZZER
#include "await.h"

static aw_loop *loop;

#define FZ_CHECK(cond, ...)                                                  \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "fuzz_stream: " __VA_ARGS__);                   \
            fputc('\n', stderr);                                             \
            abort();                                                         \
        }                                                                    \
    } while (0)
#else
#include "testutil.h"

#define FZ_CHECK(cond, ...) ck_assert_msg(cond, __VA_ARGS__)
#endif

/* ---- the input, read as a source of choices ---------------------------- */

struct src {
    const uint8_t *p;
    size_t n, i;
};

/* A choice in [0, mod): from the next byte (two for mod > 256), 0 once
 * the input runs out. */
static size_t
pick(struct src *s, size_t mod)
{
    size_t v = 0;

    if (s->i < s->n)
        v = s->p[s->i++];
    if (mod > 256 && s->i < s->n)
        v = v << 8 | s->p[s->i++];
    return mod > 0 ? v % mod : 0;
}

/* ---- the connection ---------------------------------------------------- */

static aw_stream *accepted;

static void
on_client(aw_stream *s, void *arg)
{
    (void)arg;
    accepted = s;
}

struct fz {
    aw_stream *s; /* the stream under test */
    int wfd;      /* the writer's end, -1 once closed */
    struct src *in;
    unsigned char data[1024]; /* what the writer sends, in full */
    size_t len, written;
    size_t consumed; /* the model: what the reads took */
    int desync;      /* a readline past the limit dropped an unknown
                      * amount: only the rest's ending can be checked */
};

/* Move the writer on: a random chunk, or the end of file once all is
 * written.  0 when there was nothing left to do. */
static int
write_more(struct fz *z)
{
    size_t n;

    if (z->written < z->len) {
        n = 1 + pick(z->in, 300);
        if (n > z->len - z->written)
            n = z->len - z->written;
        FZ_CHECK(write(z->wfd, z->data + z->written, n) == (ssize_t)n,
                 "write: %s", strerror(errno));
        z->written += n;
        return 1;
    }
    if (z->wfd >= 0) {
        close(z->wfd);
        z->wfd = -1;
        return 1;
    }
    return 0;
}

/* ---- the model ----------------------------------------------------------- */

enum op { OP_READ, OP_EXACT, OP_UNTIL, OP_LINE, OP_COUNT };

static const char *const seps[] = {"\n", "-", "--", "ab", "a\nb"};

/* Where sep first starts in what is left, or -1. */
static long
find(const struct fz *z, const char *sep, size_t seplen)
{
    const unsigned char *r = z->data + z->consumed;
    size_t rlen = z->len - z->consumed, i;

    for (i = 0; i + seplen <= rlen; i++)
        if (memcmp(r + i, sep, seplen) == 0)
            return (long)i;
    return -1;
}

/* The outcome the documented rules give readuntil/readline on what is
 * left: 0 with *n bytes, AW_ELIMIT (nothing taken) or AW_EINCOMPLETE
 * (everything left is the partial). */
static int
expect_until(const struct fz *z, const char *sep, size_t seplen,
             size_t limit, int line, size_t *n)
{
    size_t rlen = z->len - z->consumed;
    long p = find(z, sep, seplen);

    if (p >= 0 && (size_t)p <= limit) {
        *n = (size_t)p + seplen;
        return 0;
    }
    if (p >= 0 || rlen + 1 > limit + seplen)
        return AW_ELIMIT; /* more than limit bytes before any separator */
    *n = rlen;
    return line ? 0 : AW_EINCOMPLETE; /* readline: the last line */
}

static void
check_bytes(struct fz *z, aw_bytes *b, size_t n, const char *what)
{
    FZ_CHECK(aw_bytes_len(b) == n, "%s: %zu bytes, want %zu", what,
             aw_bytes_len(b), n);
    FZ_CHECK(n == 0 || memcmp(aw_bytes_data(b), z->data + z->consumed, n) ==
                           0,
             "%s: wrong bytes at %zu", what, z->consumed);
    z->consumed += n;
}

/* One read of a random kind with a random limit, run until it settles
 * (the writer going on meanwhile), checked against the model. */
static void
one_read(struct fz *z)
{
    int op = (int)pick(z->in, OP_COUNT), rc, want = 0;
    size_t limit = 1 + pick(z->in, 64), n = 0, rlen;
    const char *sep = "\n";
    aw_future *f;
    void *v = NULL;
    aw_bytes *b;

    aw_stream_set_limit(z->s, limit);
    if (op == OP_READ) {
        n = pick(z->in, 200);
        f = aw_stream_read(z->s, n);
    } else if (op == OP_EXACT) {
        n = pick(z->in, 300);
        f = aw_stream_readexactly(z->s, n);
    } else if (op == OP_UNTIL) {
        sep = seps[pick(z->in, sizeof(seps) / sizeof(seps[0]))];
        f = aw_stream_readuntil(z->s, sep, strlen(sep));
    } else {
        f = aw_stream_readline(z->s);
    }
    FZ_CHECK(f != NULL, "no future");
    while (!aw_future_done(f))
        aw_loop_run_once(loop, write_more(z) ? AW_RUN_NOWAIT : 0);
    rc = aw_future_error(f);
    rlen = z->len - z->consumed;
    if (op == OP_READ) {
        FZ_CHECK(rc == 0, "read(%zu): %s", n, aw_strerror(rc));
        aw_future_result(f, &v);
        b = v;
        /* Some bytes as soon as there are any; none only for n == 0 or
         * at the end of file. */
        FZ_CHECK(aw_bytes_len(b) <= n, "read(%zu) gave %zu", n,
                 aw_bytes_len(b));
        FZ_CHECK(aw_bytes_len(b) > 0 || n == 0 || rlen == 0,
                 "read(%zu) gave nothing with %zu left", n, rlen);
        check_bytes(z, b, aw_bytes_len(b), "read");
    } else if (op == OP_EXACT) {
        if (n <= rlen) {
            FZ_CHECK(rc == 0, "readexactly(%zu): %s", n, aw_strerror(rc));
            aw_future_result(f, &v);
            check_bytes(z, v, n, "readexactly");
        } else {
            FZ_CHECK(rc == AW_EINCOMPLETE, "readexactly(%zu) of %zu: %s", n,
                     rlen, aw_strerror(rc));
            b = aw_stream_partial(z->s);
            check_bytes(z, b, rlen, "readexactly's partial");
            aw_bytes_free(b);
        }
    } else {
        want = expect_until(z, sep, strlen(sep), limit, op == OP_LINE, &n);
        FZ_CHECK(rc == want, "%s(\"%s\", limit %zu) with %zu left: %s, want %s",
                 op == OP_LINE ? "readline" : "readuntil", sep, limit, rlen,
                 aw_err_name(rc), aw_err_name(want));
        if (rc == 0) {
            aw_future_result(f, &v);
            check_bytes(z, v, n, "readuntil");
        } else if (rc == AW_ELIMIT && op == OP_LINE) {
            /* readline dropped the overlong line through its separator,
             * or all that had arrived: how much depends on how the data
             * arrived (asyncio's readline). */
            z->desync = 1;
        } else if (rc == AW_EINCOMPLETE) {
            b = aw_stream_partial(z->s);
            check_bytes(z, b, n, "readuntil's partial");
            aw_bytes_free(b);
        }
    }
    aw_future_unref(f);
}

/* One input: a connection, its data, a plan of reads; then the rest is
 * drained, and what was read is what was written. */
static void
fuzz_one(const char *path, const uint8_t *data, size_t size)
{
    static const char alphabet[] = "ab-\nx";
    struct src in = {data, size, 0};
    struct sockaddr_un sun;
    struct fz *z = calloc(1, sizeof(*z));
    size_t i, nops;
    aw_future *f;

    FZ_CHECK(z != NULL, "out of memory");
    z->in = &in;
    z->len = pick(&in, sizeof(z->data));
    for (i = 0; i < z->len; i++) {
        size_t c = pick(&in, 256);

        /* Mostly separators and their parts, some of any byte. */
        z->data[i] = c < 192 ? (unsigned char)alphabet[c % 5]
                             : (unsigned char)c;
    }
    z->wfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FZ_CHECK(z->wfd >= 0, "socket: %s", strerror(errno));
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    FZ_CHECK(connect(z->wfd, (struct sockaddr *)&sun, sizeof(sun)) == 0,
             "connect: %s", strerror(errno));
    accepted = NULL;
    while (accepted == NULL)
        aw_loop_run_once(loop, 0);
    z->s = accepted;
    for (nops = 1 + pick(&in, 32); nops > 0 && !z->desync; nops--)
        one_read(z);
    /* The rest, all of it: an incomplete read of one byte more. */
    f = aw_stream_readexactly(z->s, z->len - z->consumed + 1);
    while (!aw_future_done(f))
        aw_loop_run_once(loop, write_more(z) ? AW_RUN_NOWAIT : 0);
    FZ_CHECK(aw_future_error(f) == AW_EINCOMPLETE, "drain: %s",
             aw_strerror(aw_future_error(f)));
    aw_future_unref(f);
    {
        aw_bytes *b = aw_stream_partial(z->s);

        if (z->desync) {
            /* Something past what was read was dropped: the rest is an
             * ending of what was written. */
            size_t n = aw_bytes_len(b);

            FZ_CHECK(n <= z->len - z->consumed, "%zu bytes left of %zu", n,
                     z->len - z->consumed);
            z->consumed = z->len - n;
        }
        check_bytes(z, b, z->len - z->consumed, "the rest");
        aw_bytes_free(b);
    }
    FZ_CHECK(z->consumed == z->len && aw_stream_at_eof(z->s),
             "%zu of %zu bytes read", z->consumed, z->len);
    aw_stream_close(z->s);
    aw_stream_unref(z->s);
    free(z);
}

static aw_server *
serve(const char *path)
{
    aw_future *f = aw_start_unix_server(loop, path, on_client, NULL, 0);
    void *srv = NULL;

    FZ_CHECK(aw_loop_run_until_complete(loop, f) == 0, "cannot serve on %s",
             path);
    aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    return srv;
}

static void
unserve(aw_server *srv, const char *path)
{
    int i;

    aw_server_free(srv);
    for (i = 0; i < 4; i++)
        aw_loop_run_once(loop, AW_RUN_NOWAIT); /* the losses delivered */
    unlink(path);
}

#ifdef AW_FUZZ_LIBFUZZER

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    aw_server *srv;

    snprintf(path, sizeof(path), "/tmp/awfuzz-%ld.sock", (long)getpid());
    FZ_CHECK(aw_loop_new(&loop) == 0, "no loop");
    srv = serve(path);
    fuzz_one(path, data, size);
    unserve(srv, path);
    FZ_CHECK(aw_loop_free(loop) == 0, "the loop did not close");
    return 0;
}

#else

/* xorshift64*: the inputs of `make check`, the same on every run. */
static uint64_t
next_random(uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 2685821657736338717ULL;
}

START_TEST(stream_readers_fuzzed)
{
    static uint8_t input[4096];
    const char *e = getenv("AW_FUZZ_SEED");
    uint64_t seed = e != NULL ? strtoull(e, NULL, 0) : 0x5eed5eedULL;
    long iterations = aw_test_slow() ? 30 : 1000;
    char path[64];
    aw_server *srv;
    long it;
    size_t i, size;

    if ((e = getenv("AW_FUZZ_ITERATIONS")) != NULL)
        iterations = atol(e);
    snprintf(path, sizeof(path), "/tmp/awfuzz-%ld.sock", (long)getpid());
    srv = serve(path);
    for (it = 0; it < iterations; it++) {
        size = (size_t)(next_random(&seed) % sizeof(input));
        for (i = 0; i < size; i++)
            input[i] = (uint8_t)(next_random(&seed) >> 56);
        fuzz_one(path, input, size);
    }
    unserve(srv, path);
}
END_TEST

Suite *
aw_test_suite(void)
{
    Suite *s = suite_create("fuzz_stream");
    TCase *tc = aw_test_tcase("fuzz_stream");

    tcase_add_test(tc, stream_readers_fuzzed);
    suite_add_tcase(s, tc);
    return s;
}

#endif
