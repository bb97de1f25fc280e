/* reply: JSON answers to HTTP requests (see reply.h).
 * Uses: http_server, jansson. */
#include "reply.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A strong ETag of a body: FNV-1a 64 of its bytes. */
static void etag_of(const char *text, size_t len, char *buf, size_t cap)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)text[i]) * 1099511628211ULL;
    snprintf(buf, cap, "\"%016llx\"", (unsigned long long)h);
}

/* 1 when an If-None-Match header lists `etag` (or is "*"). */
static int etag_matches(hs_request *r, const char *etag)
{
    const char *inm = hs_header(r, "If-None-Match");
    if (inm == NULL) return 0;
    if (strcmp(inm, "*") == 0) return 1;
    size_t n = strlen(etag);
    for (const char *p = strstr(inm, etag); p; p = strstr(p + 1, etag)) {
        char after = p[n];
        if (after == '\0' || after == ',' || after == ' ') return 1;
    }
    return 0;
}

void reply_json(hs_request *r, int status, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    size_t len = text ? strlen(text) : 2;
    /* Pages poll: a GET answered 200 carries an ETag, and a request that already holds it gets 304 without the
     * body. The body is built either way (the store read is the cost; the transfer and the page's work are saved). */
    if (status == 200 && strcmp(hs_method(r), "GET") == 0) {
        char etag[24], hdr[40];
        etag_of(text ? text : "{}", len, etag, sizeof etag);
        snprintf(hdr, sizeof hdr, "ETag: %s", etag);
        if (etag_matches(r, etag))
            hs_respond(r, 304, NULL, "", 0, hdr);
        else
            hs_respond(r, status, NULL, text ? text : "{}", len, hdr);
    } else {
        hs_respond(r, status, NULL, text ? text : "{}", len, NULL);
    }
    free(text);
}

void reply_complete(hs_request *r, int status, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    hs_complete(r, status, NULL, text ? text : "{}", text ? strlen(text) : 2);
    free(text);
}

void reply_complete_error(hs_request *r, int status, const char *msg)
{
    json_t *j = json_pack("{s:{s:i,s:s}}", "error", "code", status, "message", msg ? msg : "");
    reply_complete(r, status, j);
    json_decref(j);
}
