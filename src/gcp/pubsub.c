/* pubsub: the pure part of Sluice's Pub/Sub clients (pubsub.h): the endpoint rule, subscription names, and a
 * pulled message turned into what a push would have delivered.
 * Uses: events, jwt (base64), util, jansson. Must not: send requests or hold state. */
#include "pubsub.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jwt.h"
#include "util.h"

char *pubsub_pull_endpoint(const char *url, const char *emulator_host, int *no_auth)
{
    return util_api_endpoint(url, PUBSUB_DEFAULT_URL, emulator_host, no_auth);
}

static int name_part_ok(const char *s, size_t n)
{
    if (n == 0 || n > 255) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && !(c >= '0' && c <= '9') && !strchr("-_.~+%", c))
            return 0;
    }
    return 1;
}

int pubsub_pull_valid_name(const char *name)
{
    if (name == NULL || strncmp(name, "projects/", 9) != 0) return 0;
    const char *p = name + 9, *slash = strchr(p, '/');
    if (slash == NULL || !name_part_ok(p, (size_t)(slash - p))) return 0;
    if (strncmp(slash, "/subscriptions/", 15) != 0) return 0;
    const char *s = slash + 15;
    return name_part_ok(s, strlen(s));
}

int pubsub_pull_to_event(json_t *rm, const char *subscription, char **body, size_t *len, ev_header *headers,
                         size_t max_headers, size_t *n_headers, char *err, size_t errlen)
{
    *body = NULL;
    *len = 0;
    *n_headers = 0;
    json_t *msg = json_object_get(rm, "message");
    if (!json_is_object(msg)) {
        snprintf(err, errlen, "the received message has no 'message' object");
        return -1;
    }
    json_t *attrs = json_object_get(msg, "attributes");
    const char *ce_type = json_string_value(json_object_get(attrs, "ce-type"));
    const char *ctype = json_string_value(json_object_get(attrs, "content-type"));
    if (ce_type != NULL || (ctype != NULL && strncasecmp(ctype, "application/cloudevents+json", 28) == 0)) {
        /* The CloudEvents Pub/Sub binding: the event's data is the message's data, its context the attributes. */
        const char *k;
        json_t *v;
        json_object_foreach(attrs, k, v)
        {
            if (*n_headers < max_headers && json_is_string(v))
                headers[(*n_headers)++] = (ev_header){k, json_string_value(v)};
        }
        json_t *data = json_object_get(msg, "data");
        if (!json_is_string(data)) {
            snprintf(err, errlen, "the CloudEvent message has no base64 'data'");
            return -1;
        }
        size_t n = 0;
        unsigned char *raw = jwt_b64_decode(json_string_value(data), json_string_length(data), &n);
        if (raw == NULL) {
            snprintf(err, errlen, "message.data is not valid base64");
            return -1;
        }
        *body = (char *)raw;
        *len = n;
        return 0;
    }
    /* Anything else is what a push would have carried: the wrapped body. */
    json_t *da = json_object_get(rm, "deliveryAttempt");
    json_t *wrapped = json_pack("{s:O,s:s}", "message", msg, "subscription", subscription);
    if (wrapped != NULL && json_is_integer(da)) json_object_set(wrapped, "deliveryAttempt", da);
    *body = wrapped ? json_dumps(wrapped, JSON_COMPACT) : NULL;
    json_decref(wrapped);
    if (*body == NULL) {
        snprintf(err, errlen, "the message cannot be wrapped as a push body");
        return -1;
    }
    *len = strlen(*body);
    return 0;
}

