/* store_pool: a store handle per thread, opened lazily and closed together.
 * Uses: store, pthreads, log. Must not: know what the handles are used for. */
#include "store_pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"

struct store_pool {
    char *url;
    store_options opts;
    pthread_key_t key;   /* the thread's handle, or FAILED when it could not be opened */
    pthread_mutex_t mu;
    store **handles;     /* every handle opened, for closing */
    size_t n;
};

static char failed_marker;
#define FAILED ((void *)&failed_marker)

store_pool *store_pool_new(const char *url, const store_options *opts)
{
    store_pool *p = xcalloc(1, sizeof *p);
    if (url == NULL || pthread_key_create(&p->key, NULL) != 0) {
        free(p);
        return NULL;
    }
    p->url = xstrdup(url);
    if (opts) p->opts = *opts;
    pthread_mutex_init(&p->mu, NULL);
    return p;
}

store *store_pool_get(store_pool *p)
{
    void *h = pthread_getspecific(p->key);
    if (h == FAILED) return NULL;
    if (h != NULL) return h;
    store *s = NULL;
    char *err = NULL;
    if (store_open(p->url, &p->opts, &s, &err) != STORE_OK) {
        log_error("serve: cannot open the store for a request thread: %s", err ? err : "?");
        free(err);
        pthread_setspecific(p->key, FAILED);
        return NULL;
    }
    pthread_mutex_lock(&p->mu);
    p->handles = xrealloc(p->handles, (p->n + 1) * sizeof *p->handles);
    p->handles[p->n++] = s;
    pthread_mutex_unlock(&p->mu);
    pthread_setspecific(p->key, s);
    return s;
}

void store_pool_free(store_pool *p)
{
    if (p == NULL) return;
    for (size_t i = 0; i < p->n; i++) store_close(p->handles[i]);
    free(p->handles);
    pthread_key_delete(p->key);
    pthread_mutex_destroy(&p->mu);
    free(p->url);
    free(p);
}
