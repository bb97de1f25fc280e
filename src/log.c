/* log: structured JSON log lines on stderr for Cloud Logging.
 * Uses: jansson. Must not: call into any other subsystem. */
#include "log.h"

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
    json_object_set_new(line, "message", json_string(msg));
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
