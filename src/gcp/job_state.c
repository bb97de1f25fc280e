/* job_state: Dataflow's job state names and rules (see job_state.h). */
#include "job_state.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define PREFIX "JOB_STATE_"

static const char *const names[JS_COUNT] = {
    [JS_UNKNOWN] = PREFIX "UNKNOWN",       [JS_STOPPED] = PREFIX "STOPPED",
    [JS_RUNNING] = PREFIX "RUNNING",       [JS_DONE] = PREFIX "DONE",
    [JS_FAILED] = PREFIX "FAILED",         [JS_CANCELLED] = PREFIX "CANCELLED",
    [JS_UPDATED] = PREFIX "UPDATED",       [JS_DRAINING] = PREFIX "DRAINING",
    [JS_DRAINED] = PREFIX "DRAINED",       [JS_PENDING] = PREFIX "PENDING",
    [JS_CANCELLING] = PREFIX "CANCELLING", [JS_QUEUED] = PREFIX "QUEUED",
    [JS_RESOURCE_CLEANING_UP] = PREFIX "RESOURCE_CLEANING_UP",
    [JS_PAUSING] = PREFIX "PAUSING",       [JS_PAUSED] = PREFIX "PAUSED",
};

const char *js_name(job_state s)
{
    return (int)s >= 0 && s < JS_COUNT ? names[s] : names[JS_UNKNOWN];
}

int js_parse(const char *name)
{
    for (int i = 0; name != NULL && i < JS_COUNT; i++)
        if (strcmp(name, names[i]) == 0) return i;
    return -1;
}

int js_terminal(job_state s)
{
    return s == JS_DONE || s == JS_FAILED || s == JS_CANCELLED || s == JS_UPDATED || s == JS_DRAINED;
}

int js_name_terminal(const char *name)
{
    int s = js_parse(name);
    return s >= 0 && js_terminal((job_state)s);
}

int js_name_is(const char *name, job_state s)
{
    return name != NULL && strcmp(name, js_name(s)) == 0;
}

const char *js_normalize(const char *text, char *buf, size_t buflen)
{
    if (buflen == 0) return buf;
    const char *s = text;
    if (strncasecmp(s, PREFIX, sizeof PREFIX - 1) == 0) s += sizeof PREFIX - 1;
    size_t n = (size_t)snprintf(buf, buflen, PREFIX);
    if (n >= buflen) n = buflen - 1;
    for (size_t i = 0; s[i] && n + 1 < buflen; i++) buf[n++] = (char)toupper((unsigned char)s[i]);
    buf[n] = '\0';
    return buf;
}

int js_from_user(const char *text)
{
    char norm[64];
    if (text == NULL || strlen(text) >= sizeof norm - sizeof PREFIX) return -1;
    return js_parse(js_normalize(text, norm, sizeof norm));
}
