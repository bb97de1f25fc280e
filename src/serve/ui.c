/* ui: serves the embedded web UI files under /ui/.
 * Uses: http_server, the generated table (cmake/embed_ui.cmake). Must not: touch data; the pages fetch /v1/. */
#include "ui.h"

#include <string.h>

int ui_owns(const char *path)
{
    return strcmp(path, "/") == 0 || strcmp(path, "/ui") == 0 || strncmp(path, "/ui/", 4) == 0;
}

static const struct ui_file *ui_find(const char *name)
{
    for (const struct ui_file *f = ui_files; f->name != NULL; f++)
        if (strcmp(f->name, name) == 0) return f;
    return NULL;
}

void ui_route(hs_request *r)
{
    const char *m = hs_method(r), *p = hs_path(r);
    if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0) {
        const char *body = "{\"error\":{\"code\":405,\"message\":\"method not allowed\"}}";
        hs_respond(r, 405, NULL, body, strlen(body), "Allow: GET, HEAD");
        return;
    }
    if (strcmp(p, "/") == 0 || strcmp(p, "/ui") == 0) {
        const char *body = "see /ui/\n";
        hs_respond(r, 302, "text/plain", body, strlen(body), "Location: /ui/");
        return;
    }
    const char *name = p + 4; /* after "/ui/" */
    if (*name == '\0') name = "index.html";
    const struct ui_file *f = strchr(name, '/') ? NULL : ui_find(name);
    if (f == NULL) {
        hs_respond_error(r, 404, "no such file");
        return;
    }
    /* The pages only load their own script and style, and only talk to this origin. */
    const char *csp = strstr(f->ctype, "text/html")
                          ? "Content-Security-Policy: default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
                          : "X-Content-Type-Options: nosniff";
    hs_respond(r, 200, f->ctype, (const char *)f->data, f->len, csp);
}
