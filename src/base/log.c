/* log: structured JSON log lines on stderr for Cloud Logging.
 * Uses: jansson. Must not: call into any other subsystem. */
#include "log.h"
#include "mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static const char *const severity_names[] = {"DEBUG", "INFO", "WARNING", "ERROR", "NONE"};
static int current_level = -1;

static log_level level_from_env(void)
{
    const char *s = getenv("SLUICE_LOG_LEVEL");
    if (s == NULL) return LOG_INFO;
    if (strcasecmp(s, "debug") == 0) return LOG_DEBUG;
    if (strcasecmp(s, "warning") == 0 || strcasecmp(s, "warn") == 0) return LOG_WARNING;
    if (strcasecmp(s, "error") == 0) return LOG_ERROR;
    if (strcasecmp(s, "none") == 0) return LOG_NONE;
    return LOG_INFO;
}

void log_set_level(log_level level) { __atomic_store_n(&current_level, (int)level, __ATOMIC_RELAXED); }

log_level log_get_level(void)
{
    int l = __atomic_load_n(&current_level, __ATOMIC_RELAXED);
    if (l < 0) {
        l = (int)level_from_env();
        __atomic_store_n(&current_level, l, __ATOMIC_RELAXED);
    }
    return (log_level)l;
}

int log_enabled(log_level level) { return level >= log_get_level() && level != LOG_NONE; }

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when the bytes there are not one (RFC 3629: no overlong
 * forms, no surrogates, nothing past U+10FFFF). s is NUL-terminated. */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F) || (c == 0xF0 && s[1] < 0x90) ||
        (c == 0xF4 && s[1] > 0x8F))
        return 0;
    return n;
}

/* The message as a JSON string. A message that is not valid UTF-8 (a script's print of raw bytes, a message cut
 * inside a character) keeps its text, each invalid byte written as \xNN. */
static json_t *message_string(const char *msg)
{
    json_t *j = json_string(msg);
    if (j != NULL) return j;
    size_t len = strlen(msg);
    char *out = xmalloc(len * 4 + 1);
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p != '\0';) {
        size_t n = utf8_seq(p);
        if (n == 0) {
            o += (size_t)sprintf(out + o, "\\x%02X", *p++);
            continue;
        }
        memcpy(out + o, p, n);
        o += n;
        p += n;
    }
    out[o] = '\0';
    j = json_string(out);
    free(out);
    return j;
}

void log_json(log_level level, json_t *extra, const char *fmt, ...)
{
    if (!log_enabled(level)) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof when - n, ".%06ldZ", ts.tv_nsec / 1000);

    json_t *line = json_object();
    json_object_set_new(line, "severity", json_string(severity_names[level]));
    json_object_set_new(line, "message", message_string(msg));
    json_object_set_new(line, "time", json_string(when));
    if (extra != NULL) json_object_update(line, extra);
    char *text = json_dumps(line, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(line);
    if (text == NULL) return;
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps leaves room: we overwrite the NUL and write len + 1 bytes */
    ssize_t w = write(STDERR_FILENO, text, len + 1);
    (void)w;
    free(text);
}
