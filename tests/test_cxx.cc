/* SPDX-License-Identifier: MIT */
/* test_cxx.cc: <await.h> and the task macros compiled as C++ (C++11 and
 * later): a task with AW_AWAIT, AW_TRY_AWAIT and AW_FINALLY runs on a
 * loop.  Prints TAP; needs no Check. */
#include <await.h>

#include <cstdio>
#include <cstring>

namespace {

int failures;
int count;

void
ok(bool cond, const char *what)
{
    ++count;
    std::printf("%sok %d - %s\n", cond ? "" : "not ", count, what);
    if (!cond)
        ++failures;
}

struct frame {
    void *slept;
    intptr_t value;
    int rc;
    int finally_ran;
};

}

static AW_TASK(cxx_task, struct frame *f)
{
    AW_BEGIN();
    AW_AWAIT(aw_sleep_result(aw_task_loop(AW_SELF()), 0, f), &f->slept);
    AW_TRY_AWAIT(f->rc,
                 aw_future_failed(aw_task_loop(AW_SELF()), -EIO, "cxx"),
                 NULL);
    AW_AWAIT_INT(aw_future_resolved_int(aw_task_loop(AW_SELF()), 41),
                 &f->value);
    AW_RETURN_INT(f->value + 1);
    AW_FINALLY();
    f->finally_ran = 1;
    AW_END();
}

int
main()
{
    aw_loop *loop = NULL;
    frame f;
    intptr_t result = 0;

    std::memset(&f, 0, sizeof f);
    std::printf("1..6\n");
    ok(aw_loop_new(&loop) == 0, "aw_loop_new from C++");
    if (loop == NULL)
        return 1;
    aw_task *t = aw_task_new(loop, cxx_task, &f, NULL);
    ok(aw_loop_run_until_complete(loop, t) == 0,
       "a task written with the macros runs to its end");
    ok(aw_future_result_int(t, &result) == 0 && result == 42,
       "AW_AWAIT_INT and AW_RETURN_INT: the task's result is 42");
    ok(f.slept == &f && f.rc == -EIO,
       "AW_AWAIT's result and AW_TRY_AWAIT's error reach the frame");
    ok(f.finally_ran == 1, "AW_FINALLY ran");
    aw_future_unref(t);
    ok(aw_loop_free(loop) == 0 &&
           std::strcmp(aw_version(), AW_VERSION_STRING) == 0,
       "the loop closes cleanly; aw_version() is AW_VERSION_STRING");
    return failures == 0 ? 0 : 1;
}
