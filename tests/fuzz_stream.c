/* SPDX-License-Identifier: MIT */
/* fuzz_stream.c: the libFuzzer target for the stream readers (`make
 * fuzz`): the body of tests/test_fuzz_stream.c with the input from the
 * fuzzer instead of a seeded generator. */
#define AW_FUZZ_LIBFUZZER 1
#include "test_fuzz_stream.c"
