/* ui: the web UI of `sluice serve` under /ui/: static files (HTML, CSS, a script, dagre.min.js) embedded into the
 * binary at build time (cmake/embed_ui.cmake), served without authentication because they hold no data: every
 * run and workflow the pages show comes from the JSON API under /v1/, authorized as any API call.
 * Uses: http_server. Must not: read the store, the workflows or the engine. */
#ifndef SLUICE_UI_H
#define SLUICE_UI_H
#include <stddef.h>

#include "http_server.h"

/* One embedded file; the generated table ends with a NULL name. */
struct ui_file {
    const char *name;  /* "index.html", "app.js", "dagre.min.js", ... */
    const char *ctype; /* Content-Type */
    const unsigned char *data;
    size_t len;
};
extern const struct ui_file ui_files[];

/* 1 for the paths ui_route answers: "/" (a redirect to /ui/), "/ui" and "/ui/...". */
int ui_owns(const char *path);
/* Answers GET or HEAD of an owned path: the file (index.html for /ui/), 302 to /ui/ for "/" and "/ui", 404 for
 * an unknown file, 405 for other methods. */
void ui_route(hs_request *r);

#endif
