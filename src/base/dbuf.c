/* dbuf: a growing byte buffer with a cap (see dbuf.h). */
#include "dbuf.h"

#include <stdlib.h>
#include <string.h>

#include "mem.h"

void dbuf_init(dbuf *b, size_t max)
{
    memset(b, 0, sizeof *b);
    b->max = max;
}

int dbuf_add(dbuf *b, const void *p, size_t n)
{
    if (b->max != 0 && (n > b->max || b->len > b->max - n)) return -1;
    if (n >= b->cap - b->len || b->data == NULL) { /* room for n bytes and the terminator */
        size_t cap = b->cap ? b->cap : 1024;
        while (cap - b->len <= n) {
            if (cap > ((size_t)-1) / 2) mem_out_of_memory((size_t)-1);
            cap *= 2;
        }
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    if (n > 0) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

void dbuf_free(dbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
