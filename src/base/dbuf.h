/* dbuf: a growing byte buffer, always NUL-terminated once anything is in it, with an optional cap on its length
 * (curl's dynbuf). The one home for the request and response bodies of both HTTP servers and the client, and the
 * store migration's COPY text.
 * Uses: mem. Must not: know what the bytes are. */
#ifndef SLUICE_DBUF_H
#define SLUICE_DBUF_H
#include <stddef.h>

typedef struct {
    char *data; /* NULL until the first byte; then NUL-terminated */
    size_t len; /* bytes held, the terminator not counted */
    size_t cap; /* bytes allocated */
    size_t max; /* the most len may reach; 0: no cap */
} dbuf;

/* An empty buffer that holds at most `max` bytes (0: no cap). A zeroed dbuf is an empty one without a cap. */
void dbuf_init(dbuf *b, size_t max);
/* Appends n bytes. Returns 0, or -1 when len would pass max (nothing is appended; the buffer is unchanged). */
int dbuf_add(dbuf *b, const void *p, size_t n);
/* Frees the bytes; the buffer is empty again, with the same cap. */
void dbuf_free(dbuf *b);

#endif
