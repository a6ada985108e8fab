/* SPDX-License-Identifier: MIT */
/* test_core.c: error codes, their names and descriptions, the allocator
 * hook and the version. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

START_TEST(every_library_code_has_name_and_text)
{
    static const int codes[] = {
#define AW__CODE(name, value, text) AW_E##name,
        AW_ERRNO_MAP(AW__CODE)
#undef AW__CODE
    };
    size_t i, j;

    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        ck_assert_int_lt(codes[i], -2000);
        ck_assert_msg(strncmp(aw_err_name(codes[i]), "AW_E", 4) == 0,
                      "code %d has no name", codes[i]);
        ck_assert_str_ne(aw_strerror(codes[i]), "unknown error");
        for (j = 0; j < i; j++)
            ck_assert_int_ne(codes[i], codes[j]);
    }
    ck_assert_str_eq(aw_err_name(AW_EINVALSTATE), "AW_EINVALSTATE");
    ck_assert_str_eq(aw_err_name(AW_EAI_NONAME), "AW_EAI_NONAME");
}
END_TEST

/* One code per condition: where errno names it, the library's name is an
 * alias of the errno value. */
START_TEST(errno_conditions_are_errno_codes)
{
    ck_assert_int_eq(AW_ECANCELLED, -ECANCELED);
    ck_assert_int_eq(AW_ETIMEDOUT, -ETIMEDOUT);
    ck_assert_str_eq(aw_err_name(AW_ECANCELLED), "ECANCELED");
    ck_assert_str_eq(aw_err_name(AW_ETIMEDOUT), "ETIMEDOUT");
    ck_assert_str_eq(aw_strerror(AW_ETIMEDOUT), strerror(ETIMEDOUT));
}
END_TEST

START_TEST(errno_codes_have_name_and_text)
{
    ck_assert_str_eq(aw_err_name(-EINVAL), "EINVAL");
    ck_assert_str_eq(aw_err_name(-ECONNRESET), "ECONNRESET");
    ck_assert_str_eq(aw_err_name(-EPROTO), "EPROTO");
    ck_assert_str_eq(aw_err_name(0), "OK");
    ck_assert_str_eq(aw_strerror(0), "success");
    ck_assert_str_eq(aw_strerror(-ENOMEM), strerror(ENOMEM));
    ck_assert_str_eq(aw_strerror(-ECONNREFUSED), strerror(ECONNREFUSED));
}
END_TEST

START_TEST(unknown_codes_are_named_unknown)
{
    ck_assert_str_eq(aw_err_name(-2999), "UNKNOWN");
    ck_assert_str_eq(aw_err_name(12345), "UNKNOWN");
    ck_assert_str_eq(aw_strerror(-2999), "unknown error");
    ck_assert_str_eq(aw_strerror(-100000), "unknown error");
    ck_assert_str_eq(aw_strerror(7), "unknown error");
}
END_TEST

START_TEST(replace_allocator_rejects_null)
{
    ck_assert_int_eq(aw_replace_allocator(NULL, realloc, calloc, free),
                     -EINVAL);
    ck_assert_int_eq(aw_replace_allocator(malloc, realloc, calloc, NULL),
                     -EINVAL);
    /* The counting allocator the runner installed is still in place. */
    ck_assert_int_gt(aw_test_live_allocations(), 0);
}
END_TEST

START_TEST(version_is_the_package_version)
{
    ck_assert_str_eq(aw_version(), PACKAGE_VERSION);
}
END_TEST

/* AW_VERSION_* come from the one version configure was given (AC_INIT),
 * agree with each other, and aw_version() returns the same at run time. */
START_TEST(version_macros_match_aw_version)
{
    char s[64];

    snprintf(s, sizeof(s), "%d.%d.%d", AW_VERSION_MAJOR, AW_VERSION_MINOR,
             AW_VERSION_PATCH);
    ck_assert_str_eq(s, AW_VERSION_STRING);
    ck_assert_str_eq(AW_VERSION_STRING, PACKAGE_VERSION);
    ck_assert_str_eq(aw_version(), AW_VERSION_STRING);
    ck_assert_int_eq(AW_VERSION_HEX, (AW_VERSION_MAJOR << 16) |
                                         (AW_VERSION_MINOR << 8) |
                                         AW_VERSION_PATCH);
#if AW_VERSION_HEX < 0x000100
#error "AW_VERSION_HEX is not usable in #if"
#endif
}
END_TEST

Suite *
aw_test_suite(void)
{
    Suite *s = suite_create("core");
    TCase *tc = aw_test_tcase("core");

    tcase_add_test(tc, every_library_code_has_name_and_text);
    tcase_add_test(tc, errno_conditions_are_errno_codes);
    tcase_add_test(tc, errno_codes_have_name_and_text);
    tcase_add_test(tc, unknown_codes_are_named_unknown);
    tcase_add_test(tc, replace_allocator_rejects_null);
    tcase_add_test(tc, version_is_the_package_version);
    tcase_add_test(tc, version_macros_match_aw_version);
    suite_add_tcase(s, tc);
    return s;
}
