/* events: push / LogEntry / CloudEvents / Job JSON decoded into one job event.
 * Uses: jansson, OpenSSL base64, util. Must not: decide anything or call the engine. */
#include "events.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "job_state.h"
#include "mem.h"
#include "util.h"

#define EV_MAX_DEPTH 32

void ev_job_event_free(ev_job_event *ev)
{
    if (ev == NULL) return;
    free(ev->message_id);
    free(ev->job_id);
    free(ev->job_name);
    free(ev->project);
    free(ev->region);
    free(ev->state);
    free(ev->log_text);
    json_decref(ev->labels);
    memset(ev, 0, sizeof *ev);
}

const char *ev_identity(const ev_job_event *ev, char *buf, size_t buflen)
{
    snprintf(buf, buflen, "%s/%s", ev->job_id ? ev->job_id : "-", ev->state ? ev->state : "ENDED");
    return buf;
}

static ev_status fail(char *err, size_t errlen, ev_status st, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static ev_status fail(char *err, size_t errlen, ev_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return st;
}

static const char *header(const ev_header *h, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(h[i].name, name) == 0) return h[i].value;
    return NULL;
}

static char *dup_str(json_t *v) { return json_is_string(v) ? xstrdup(json_string_value(v)) : NULL; }

static int depth_ok(json_t *v, int depth)
{
    if (depth > EV_MAX_DEPTH) return 0;
    size_t i;
    const char *k;
    json_t *x;
    if (json_is_object(v)) {
        json_object_foreach(v, k, x) if (!depth_ok(x, depth + 1)) return 0;
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, x) if (!depth_ok(x, depth + 1)) return 0;
    }
    return 1;
}

/* jansson rejects invalid UTF-8 and NUL bytes; nesting is bounded afterwards. */
static json_t *parse_json(const char *body, size_t len, char *err, size_t errlen)
{
    json_error_t je;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL) {
        snprintf(err, errlen, "invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
        return NULL;
    }
    if (!depth_ok(j, 0)) {
        json_decref(j);
        snprintf(err, errlen, "JSON nested deeper than %d levels", EV_MAX_DEPTH);
        return NULL;
    }
    return j;
}

/* Standard base64 (with padding, as Pub/Sub sends) via OpenSSL. Caller frees. */
static unsigned char *b64_decode(const char *in, size_t inlen, size_t *outlen)
{
    if (inlen % 4 != 0) return NULL;
    for (size_t i = 0; i < inlen; i++) {
        unsigned char c = (unsigned char)in[i];
        if (!(isalnum(c) || c == '+' || c == '/' || (c == '=' && i >= inlen - 2))) return NULL;
    }
    unsigned char *out = xmalloc(inlen / 4 * 3 + 1);
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)inlen);
    if (n < 0) {
        free(out);
        return NULL;
    }
    if (inlen >= 1 && in[inlen - 1] == '=') n--;
    if (inlen >= 2 && in[inlen - 2] == '=') n--;
    out[n] = '\0';
    *outlen = (size_t)n;
    return out;
}

static void set_time(ev_job_event *ev, json_t *t)
{
    int64_t ms;
    if (json_is_string(t) && util_parse_rfc3339(json_string_value(t), &ms) == 0) ev->event_time_ms = ms;
}

/* A Dataflow Job resource (jobs.get, statusChanged payload). */
static ev_status from_job(json_t *job, ev_job_event *ev, char *err, size_t errlen)
{
    json_t *id = json_object_get(job, "id"), *name = json_object_get(job, "name");
    json_t *state = json_object_get(job, "currentState");
    if (!json_is_string(id) || !json_is_string(name))
        return fail(err, errlen, EV_ERR_SHAPE, "job has no string 'id' and 'name'");
    if (state != NULL && !json_is_string(state)) return fail(err, errlen, EV_ERR_SHAPE, "job currentState is not a string");
    ev->job_id = dup_str(id);
    ev->job_name = dup_str(name);
    ev->project = dup_str(json_object_get(job, "projectId"));
    ev->region = dup_str(json_object_get(job, "location"));
    /* A Job without currentState (a launch response) is pending, not ended: NULL would mean "it ended". */
    ev->state = state != NULL ? dup_str(state) : xstrdup(js_name(JS_UNKNOWN));
    ev->state_confirmed = state != NULL;
    json_t *labels = json_object_get(job, "labels");
    if (json_is_object(labels)) ev->labels = json_incref(labels);
    set_time(ev, json_object_get(job, "currentStateTime"));
    return EV_OK;
}

/* Maps a job-message log line to a state hint; NULL when it only says the job ended. */
static const char *state_hint(const char *text)
{
    if (text == NULL) return NULL;
    if (strncmp(text, "Workflow failed", 15) == 0) return js_name(JS_FAILED);
    if (strncmp(text, "Executing success step", 22) == 0) return js_name(JS_DONE);
    return NULL;
}

static ev_status from_logentry(json_t *le, ev_job_event *ev, char *err, size_t errlen)
{
    json_t *res = json_object_get(le, "resource");
    if (!json_is_object(res)) return fail(err, errlen, EV_ERR_SHAPE, "LogEntry has no resource");
    json_t *type = json_object_get(res, "type");
    if (!json_is_string(type) || strcmp(json_string_value(type), "dataflow_step") != 0)
        return fail(err, errlen, EV_IRRELEVANT, "LogEntry resource.type is not dataflow_step");
    json_t *rl = json_object_get(res, "labels"), *ll = json_object_get(le, "labels");
    json_t *job_id = json_object_get(rl, "job_id"), *job_name = json_object_get(rl, "job_name");
    if (!json_is_string(job_id)) job_id = json_object_get(ll, "dataflow.googleapis.com/job_id");
    if (!json_is_string(job_name)) job_name = json_object_get(ll, "dataflow.googleapis.com/job_name");
    if (!json_is_string(job_id) || !json_is_string(job_name))
        return fail(err, errlen, EV_ERR_SHAPE, "dataflow_step LogEntry has no job_id/job_name labels");
    json_t *text = json_object_get(le, "textPayload");
    if (text != NULL && !json_is_string(text)) return fail(err, errlen, EV_ERR_SHAPE, "textPayload is not a string");
    const char *t = json_string_value(text);
    /* Only job-level lines that mark an end are events; anything else from the same log is irrelevant. */
    int ends = t != NULL && (strcmp(t, "Worker pool stopped.") == 0 || state_hint(t) != NULL);
    if (!ends) return fail(err, errlen, EV_IRRELEVANT, "log line does not mark the end of a job");
    ev->job_id = dup_str(job_id);
    ev->job_name = dup_str(job_name);
    json_t *region = json_object_get(rl, "region");
    if (!json_is_string(region)) region = json_object_get(ll, "dataflow.googleapis.com/region");
    ev->region = dup_str(region);
    ev->project = dup_str(json_object_get(rl, "project_id"));
    const char *hint = state_hint(t);
    ev->state = hint ? xstrdup(hint) : NULL;
    ev->state_confirmed = 0;
    ev->log_text = xstrdup(t);
    set_time(ev, json_object_get(le, "timestamp"));
    return EV_OK;
}

/* The Pub/Sub message object of a wrapped push: base64 data holding a LogEntry. */
static ev_status from_pubsub_message(json_t *msg, ev_job_event *ev, char *err, size_t errlen)
{
    if (!json_is_object(msg)) return fail(err, errlen, EV_ERR_SHAPE, "'message' is not an object");
    json_t *id = json_object_get(msg, "messageId");
    if (!json_is_string(id)) id = json_object_get(msg, "message_id");
    json_t *data = json_object_get(msg, "data");
    if (!json_is_string(data)) return fail(err, errlen, EV_ERR_SHAPE, "message has no base64 'data'");
    size_t n = 0;
    unsigned char *raw = b64_decode(json_string_value(data), json_string_length(data), &n);
    if (raw == NULL) return fail(err, errlen, EV_ERR_SYNTAX, "message.data is not valid base64");
    char inner[200];
    json_t *le = parse_json((const char *)raw, n, inner, sizeof inner);
    free(raw);
    if (le == NULL) return fail(err, errlen, EV_ERR_SYNTAX, "message.data: %s", inner);
    ev_status st = json_is_object(le) ? from_logentry(le, ev, err, errlen)
                                      : fail(err, errlen, EV_ERR_SHAPE, "message.data is not a LogEntry object");
    json_decref(le);
    if (st == EV_OK && json_is_string(id)) ev->message_id = dup_str(id);
    return st;
}

/* Any JSON body, with the CloudEvents headers (if any) already examined by the caller. */
static ev_status from_body(json_t *j, const char *ce_type, ev_job_event *ev, char *err, size_t errlen)
{
    if (!json_is_object(j)) return fail(err, errlen, EV_ERR_SHAPE, "body is not a JSON object");
    if (ce_type != NULL && strcmp(ce_type, "google.cloud.dataflow.job.v1beta3.statusChanged") == 0) {
        json_t *payload = json_object_get(j, "payload");
        if (!json_is_object(payload)) return fail(err, errlen, EV_ERR_SHAPE, "statusChanged event has no payload object");
        snprintf(ev->source, sizeof ev->source, "eventarc-dataflow");
        return from_job(payload, ev, err, errlen);
    }
    if (ce_type != NULL && strcmp(ce_type, "google.cloud.pubsub.topic.v1.messagePublished") != 0)
        return fail(err, errlen, EV_IRRELEVANT, "CloudEvent type %s is not handled", ce_type);
    json_t *msg = json_object_get(j, "message");
    if (msg != NULL) {
        snprintf(ev->source, sizeof ev->source, "%s", ce_type ? "eventarc-pubsub" : "pubsub");
        ev_status st = from_pubsub_message(msg, ev, err, errlen);
        json_t *da = json_object_get(j, "deliveryAttempt");
        if (json_is_integer(da)) ev->delivery_attempt = (int)json_integer_value(da);
        return st;
    }
    if (json_object_get(j, "resource") != NULL || json_object_get(j, "logName") != NULL) {
        snprintf(ev->source, sizeof ev->source, "logentry");
        return from_logentry(j, ev, err, errlen);
    }
    if (json_object_get(j, "currentState") != NULL || (json_object_get(j, "id") && json_object_get(j, "name"))) {
        snprintf(ev->source, sizeof ev->source, "job");
        return from_job(j, ev, err, errlen);
    }
    if (json_is_object(json_object_get(j, "job"))) { /* a launch response */
        snprintf(ev->source, sizeof ev->source, "job");
        return from_job(json_object_get(j, "job"), ev, err, errlen);
    }
    return fail(err, errlen, EV_ERR_SHAPE, "not a Pub/Sub push, LogEntry, CloudEvent or Dataflow job");
}

ev_status ev_decode(const ev_header *headers, size_t n_headers, const char *body, size_t len, ev_job_event *ev,
                    char *err, size_t errlen)
{
    memset(ev, 0, sizeof *ev);
    json_t *j = parse_json(body, len, err, errlen);
    if (j == NULL) return EV_ERR_SYNTAX;
    const char *ce_type = header(headers, n_headers, "ce-type");
    const char *ce_id = header(headers, n_headers, "ce-id");
    const char *ce_source = header(headers, n_headers, "ce-source");
    const char *ce_version = header(headers, n_headers, "ce-specversion");
    const char *ctype = header(headers, n_headers, "content-type");
    json_t *inner = j;
    const char *missing = NULL, *mode = "binary-mode";
    if (ctype != NULL && strncasecmp(ctype, "application/cloudevents+json", 28) == 0) {
        /* structured mode: the envelope holds type, source, id and data */
        ce_type = json_string_value(json_object_get(j, "type"));
        ce_id = json_string_value(json_object_get(j, "id"));
        ce_source = json_string_value(json_object_get(j, "source"));
        ce_version = json_string_value(json_object_get(j, "specversion"));
        inner = json_object_get(j, "data");
        if (ce_type == NULL || inner == NULL) {
            json_decref(j);
            return fail(err, errlen, EV_ERR_SHAPE, "structured CloudEvent needs 'type' and 'data'");
        }
        mode = "structured";
    }
    /* A CloudEvent (any of its required attributes given) must carry all of them (CloudEvents 1.0: id, source,
     * specversion, type): without ce-type a binary-mode event was decoded as a plain push and acknowledged. */
    if (ce_type != NULL || ce_id != NULL || ce_source != NULL || ce_version != NULL) {
        if (ce_id == NULL || ce_id[0] == '\0') missing = "id";
        else if (ce_source == NULL || ce_source[0] == '\0') missing = "source";
        else if (ce_version == NULL || ce_version[0] == '\0') missing = "specversion";
        else if (ce_type == NULL || ce_type[0] == '\0') missing = "type";
        if (missing != NULL) {
            json_decref(j);
            return fail(err, errlen, EV_ERR_SHAPE,
                        "%s CloudEvent has no %s%s (required: id, source, specversion, type)", mode,
                        mode[0] == 'b' ? "ce-" : "", missing);
        }
        if (strcmp(ce_version, "1.0") != 0) {
            /* the message first: in structured mode ce_version points into j */
            ev_status bad = fail(err, errlen, EV_ERR_SHAPE, "CloudEvents specversion %.16s is not supported (1.0 is)",
                                 ce_version);
            json_decref(j);
            return bad;
        }
    }
    ev_status st = from_body(inner, ce_type, ev, err, errlen);
    if (st == EV_OK) {
        const char *push_id = header(headers, n_headers, "x-goog-pubsub-message-id");
        if (ce_id != NULL) {
            free(ev->message_id);
            ev->message_id = util_printf("%s/%s", ce_source ? ce_source : "", ce_id);
        } else if (ev->message_id == NULL && push_id != NULL) {
            ev->message_id = xstrdup(push_id);
        }
        if (ce_type == NULL && push_id != NULL && strcmp(ev->source, "logentry") == 0)
            snprintf(ev->source, sizeof ev->source, "pubsub");
    } else {
        ev_job_event_free(ev);
    }
    json_decref(j);
    return st;
}

ev_status ev_decode_file_text(const char *text, size_t len, ev_job_event *ev, char *err, size_t errlen)
{
    memset(ev, 0, sizeof *ev); /* every failure leaves *ev empty, as ev_decode does (not only those it reaches) */
    size_t i = 0;
    while (i < len && isspace((unsigned char)text[i])) i++;
    if (i < len && (text[i] == '{' || text[i] == '[')) return ev_decode(NULL, 0, text + i, len - i, ev, err, errlen);
    /* An HTTP request dump: skip the request line, read headers up to the blank line. */
    ev_header hdrs[64];
    size_t nh = 0;
    char *copy = xmalloc(len + 1);
    memcpy(copy, text, len);
    copy[len] = '\0';
    char *p = strchr(copy, '\n');
    ev_status st;
    if (p == NULL) {
        st = fail(err, errlen, EV_ERR_SHAPE, "neither JSON nor an HTTP request");
        goto done;
    }
    p++;
    while (*p != '\0' && *p != '\r' && *p != '\n') {
        char *eol = strchr(p, '\n');
        if (eol != NULL) *eol = '\0';
        size_t l = strlen(p);
        if (l > 0 && p[l - 1] == '\r') p[l - 1] = '\0';
        char *colon = strchr(p, ':');
        if (colon != NULL && nh < 64) {
            *colon = '\0';
            char *v = colon + 1;
            while (*v == ' ') v++;
            hdrs[nh].name = p;
            hdrs[nh].value = v;
            nh++;
        }
        if (eol == NULL) {
            p += l;
            break;
        }
        p = eol + 1;
    }
    if (*p == '\r') p++;
    if (*p == '\n') p++;
    st = ev_decode(hdrs, nh, p, strlen(p), ev, err, errlen);
done:
    free(copy);
    return st;
}
