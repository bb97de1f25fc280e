/* test_dbuf: the growing byte buffer with a cap (src/base/dbuf.c) that the HTTP servers, the HTTP client and the
 * store migration share. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "dbuf.h"

/* Growth past the first allocation keeps every byte, in order, and the terminator. */
static void test_grows_and_terminates(void **state)
{
    (void)state;
    dbuf b;
    dbuf_init(&b, 0);
    assert_null(b.data);
    assert_int_equal(dbuf_add(&b, "", 0), 0); /* an empty add still gives a terminated, empty text */
    assert_non_null(b.data);
    assert_string_equal(b.data, "");
    char chunk[700];
    for (int i = 0; i < 100; i++) {
        memset(chunk, 'a' + i % 26, sizeof chunk);
        assert_int_equal(dbuf_add(&b, chunk, sizeof chunk), 0);
        assert_int_equal(b.len, (size_t)(i + 1) * sizeof chunk);
        assert_true(b.cap > b.len);
        assert_int_equal(b.data[b.len], '\0');
    }
    for (int i = 0; i < 100; i++) assert_int_equal(b.data[(size_t)i * sizeof chunk + 699], 'a' + i % 26);
    dbuf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
}

/* The cap: reaching it exactly is allowed; one byte past it is refused and changes nothing. */
static void test_cap(void **state)
{
    (void)state;
    dbuf b;
    dbuf_init(&b, 10);
    assert_int_equal(dbuf_add(&b, "0123456", 7), 0);
    assert_int_equal(dbuf_add(&b, "7890", 4), -1);
    assert_int_equal(b.len, 7);
    assert_string_equal(b.data, "0123456");
    assert_int_equal(dbuf_add(&b, "789", 3), 0);
    assert_string_equal(b.data, "0123456789");
    assert_int_equal(dbuf_add(&b, "x", 1), -1);
    assert_int_equal(dbuf_add(&b, "", 0), 0);
    /* a length that would overflow len + n is refused, not wrapped */
    assert_int_equal(dbuf_add(&b, "x", (size_t)-1), -1);
    dbuf_free(&b);
    assert_int_equal(b.max, 10); /* freed, the cap stays: the buffer can be filled again */
    assert_int_equal(dbuf_add(&b, "0123456789", 10), 0);
    dbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_grows_and_terminates), cmocka_unit_test(test_cap)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
