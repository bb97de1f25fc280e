/* store_pool: one store handle per thread for the HTTP worker threads of `sluice serve` (a store handle is used
 * by one thread at a time), opened on a thread's first use and all closed together at shutdown.
 * Uses: store, pthreads, log. Must not: know what the handles are used for. */
#ifndef SLUICE_STORE_POOL_H
#define SLUICE_STORE_POOL_H
#include "store.h"

typedef struct store_pool store_pool;

/* url and the options are copied. Returns NULL for a NULL url, or when no thread key is left (pthread_key_create). */
store_pool *store_pool_new(const char *url, const store_options *opts);
/* The calling thread's handle, opened on first use; NULL if it cannot be opened (logged once per thread).
 * Borrowed until store_pool_free. */
store *store_pool_get(store_pool *p);
/* Closes every handle; call once no thread uses the pool any more. */
void store_pool_free(store_pool *p);

#endif
