/* reply: answers to `sluice serve`'s HTTP requests with a JSON body: at once (a GET answered 200 carries an ETag and
 * a request already holding it gets 304) or for a deferred request (engine_loop's answers).
 * Uses: http_server, jansson. Must not: shape the JSON (views.h does). */
#ifndef SLUICE_REPLY_H
#define SLUICE_REPLY_H
#include <jansson.h>

#include "http_server.h"

/* Answer now (hs_respond) or a deferred request (hs_complete) with j (borrowed) as compact JSON. */
void reply_json(hs_request *r, int status, json_t *j);
void reply_complete(hs_request *r, int status, json_t *j);
void reply_complete_error(hs_request *r, int status, const char *msg);

#endif
