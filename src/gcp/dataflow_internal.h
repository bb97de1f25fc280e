/* dataflow_internal: what the Dataflow client (dataflow.c) takes from the REST format (dataflow_format.c) beyond
 * dataflow.h's public entry points. Private to the two: nothing else includes it.
 * Uses: dataflow.h. */
#ifndef SLUICE_DATAFLOW_INTERNAL_H
#define SLUICE_DATAFLOW_INTERNAL_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "dataflow.h"

/* A new result of `err` (retry_delay_ms -1) with a message from fmt (NULL: none). */
df_result *df_result_new(df_err err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The answer of an HTTP exchange (status, body, Retry-After) as a result: DF_OK (2xx; the body is read per call
 * by df_answer_read) or DF_ERR_HTTP with Google's error fields. `now_ms` (unix ms) dates a Retry-After given as a
 * date. */
df_result *df_result_from_http(long status, const char *body, size_t len, const char *retry_after,
                               int64_t now_ms);
/* Reads a 2xx answer's body (r->raw) as `kind` expects it: the job into r->job, the list into r->jobs. Returns 0,
 * or -1 with r turned into DF_ERR_BAD_RESPONSE. */
int df_answer_read(df_answer_kind kind, df_result *r);
/* Turns r into DF_ERR_BAD_RESPONSE saying `why`. */
void df_bad_response(df_result *r, const char *why);
/* The query object of a rendered request (df_launch_render) as "?k=v&..." with values percent-encoded ("" when
 * none); caller frees. */
char *df_query_string(json_t *query);

#endif
