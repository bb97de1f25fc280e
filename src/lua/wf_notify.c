/* wf_notify: run event names and the notification settings' rules (see wf_notify.h).
 * Uses: libc only. Must not: do I/O. */
#include "wf_notify.h"
#include "mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const run_event_names[WF_EV_COUNT] = {"started", "succeeded", "failed", "cancelled", "recovered",
                                                         "deadline_missed"};

const char *wf_run_event_name(int ev) { return ev >= 0 && ev < WF_EV_COUNT ? run_event_names[ev] : NULL; }

int wf_run_event_parse(const char *name)
{
    for (int i = 0; name != NULL && i < WF_EV_COUNT; i++)
        if (strcmp(name, run_event_names[i]) == 0) return i;
    return -1;
}

long wf_run_event_mask(const char *list)
{
    long mask = 0;
    char *copy = xstrdup(list ? list : ""), *save = NULL;
    for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        int ev = wf_run_event_parse(t);
        if (ev < 0) {
            mask = -1;
            break;
        }
        mask |= 1L << ev;
    }
    free(copy);
    return mask;
}

const char *wf_webhook_url_problem(const char *url)
{
    if (url == NULL || *url == '\0') return "is empty";
    const char *host;
    int https = strncmp(url, "https://", 8) == 0;
    if (https) host = url + 8;
    else if (strncmp(url, "http://", 7) == 0) host = url + 7;
    else return "must be an https:// URL (http:// only to a loopback address)";
    size_t n = strcspn(host, "/?#");
    if (n == 0) return "has no host";
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f) return "contains a space or a control character";
    if (https) return NULL;
    /* the host without its port: "[::1]:8080", "127.0.0.1:80", "localhost" */
    char h[256];
    snprintf(h, sizeof h, "%.*s", (int)(n < sizeof h - 1 ? n : sizeof h - 1), host);
    if (strchr(h, '@') != NULL) return "must not carry credentials";
    if (h[0] == '[') {
        char *end = strchr(h, ']');
        if (end == NULL) return "has a bad host";
        *end = '\0';
        return strcmp(h + 1, "::1") == 0 ? NULL : "may use http:// only to a loopback address (else https://)";
    }
    char *colon = strchr(h, ':');
    if (colon) *colon = '\0';
    if (strcmp(h, "localhost") == 0) return NULL;
    unsigned a, b, c, d;
    char extra;
    if (sscanf(h, "%u.%u.%u.%u%c", &a, &b, &c, &d, &extra) == 4 && a == 127 && b < 256 && c < 256 && d < 256)
        return NULL;
    return "may use http:// only to a loopback address (else https://)";
}

const char *wf_topic_problem(const char *topic)
{
    if (topic == NULL || strncmp(topic, "projects/", 9) != 0) return "must be projects/PROJECT/topics/TOPIC";
    const char *p = topic + 9, *slash = strchr(p, '/');
    if (slash == NULL || slash == p || strncmp(slash, "/topics/", 8) != 0) return "must be projects/PROJECT/topics/TOPIC";
    const char *t = slash + 8;
    if (*t == '\0' || strchr(t, '/') != NULL || strchr(t, ':') != NULL) return "must be projects/PROJECT/topics/TOPIC";
    for (const char *q = topic; *q; q++)
        if ((unsigned char)*q <= ' ') return "contains a space or a control character";
    return NULL;
}
