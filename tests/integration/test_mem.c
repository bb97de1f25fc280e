/* test_mem: the out-of-memory policy (src/base/mem.c): the x-allocators behave as libc's where memory suffices,
 * and a request that cannot be met ends the process with SIGABRT and one line on stderr (checked in a child). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mem.h"

/* Under the sanitizers, an allocation that cannot be met returns NULL as glibc's does, instead of the sanitizer
 * stopping the process itself (these hooks are read only by an ASan or TSan build). */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }
const char *__tsan_default_options(void);
const char *__tsan_default_options(void) { return "allocator_may_return_null=1"; }

static void test_allocators(void **state)
{
    (void)state;
    assert_null(xstrdup(NULL));
    assert_null(xstrndup(NULL, 3));
    char *s = xstrdup("sluice");
    assert_string_equal(s, "sluice");
    free(s);
    s = xstrndup("sluice", 3);
    assert_string_equal(s, "slu");
    free(s);
    s = xstrndup("ab", 10);
    assert_string_equal(s, "ab");
    free(s);
    unsigned char *z = xcalloc(64, 4);
    for (int i = 0; i < 256; i++) assert_int_equal(z[i], 0);
    z = xrealloc(z, 4096);
    z[4095] = 7;
    assert_int_equal(z[0], 0);
    free(z);
    void *p = xmalloc(0); /* a real, freeable pointer */
    assert_non_null(p);
    free(p);
}

/* Runs `what` in a child whose stderr is a pipe; returns the wait status, *text = what it wrote. */
static int in_child(void (*what)(void), char *text, size_t cap)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        what();
        _exit(0);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t r;
    while (n + 1 < cap && (r = read(fds[0], text + n, cap - 1 - n)) > 0) n += (size_t)r;
    text[n] = '\0';
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static void huge_malloc(void) { (void)!xmalloc(SIZE_MAX - 4096); }
static void overflowing_calloc(void) { (void)!xcalloc(SIZE_MAX / 2, 4); }
static void huge_json(void)
{
    static const char one[1] = {'x'};
    mem_install();
    /* jansson copies a string of this length: its allocation goes through xmalloc and cannot be met (nothing is read
     * before it) */
    (void)!json_stringn_nocheck(one, SIZE_MAX - 16);
}

static void expect_abort(void (*what)(void), const char *bytes)
{
    char text[512];
    int status = in_child(what, text, sizeof text);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    assert_non_null(strstr(text, "sluice: out of memory (allocating "));
    if (bytes) assert_non_null(strstr(text, bytes));
}

static void test_out_of_memory_aborts(void **state)
{
    (void)state;
    expect_abort(huge_malloc, NULL);
    expect_abort(overflowing_calloc, NULL);
    expect_abort(huge_json, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allocators),
        cmocka_unit_test(test_out_of_memory_aborts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
