/* Tiny in-tree test harness: each check prints file:line on failure and the
 * test executable exits non-zero at the end (or at once for TEST_REQUIRE). */
#ifndef SEGD_TEST_HARNESS_H
#define SEGD_TEST_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures;
static int test_checks;

#define TEST_CHECK(cond)                                                          \
    do {                                                                          \
        test_checks++;                                                            \
        if (!(cond)) {                                                            \
            test_failures++;                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                         \
    } while (0)

#define TEST_REQUIRE(cond)                                                        \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "%s:%d: requirement failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                              \
        }                                                                         \
    } while (0)

#define TEST_EQ_INT(a, b)                                                         \
    do {                                                                          \
        long long _a = (long long)(a), _b = (long long)(b);                       \
        test_checks++;                                                            \
        if (_a != _b) {                                                           \
            test_failures++;                                                      \
            fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__, \
                    __LINE__, #a, _a, #b, _b);                                    \
        }                                                                         \
    } while (0)

#define TEST_EQ_STR(a, b)                                                         \
    do {                                                                          \
        const char *_a = (a), *_b = (b);                                          \
        test_checks++;                                                            \
        if (!_a || !_b || strcmp(_a, _b) != 0) {                                  \
            test_failures++;                                                      \
            fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__,   \
                    __LINE__, #a, _a ? _a : "(null)", _b ? _b : "(null)");        \
        }                                                                         \
    } while (0)

/* Call at the end of main(): returns the process exit status. */
static inline int test_report(const char *name)
{
    fprintf(stderr, "%s: %d checks, %d failed\n", name, test_checks, test_failures);
    return test_failures ? 1 : 0;
}

#endif
