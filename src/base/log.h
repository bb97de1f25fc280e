/* log: structured JSON log lines on stderr, in the shape Cloud Logging parses (severity, message, time).
 * Uses: jansson. Must not: call into any other subsystem; everything may call it.
 * Every function is thread-safe; a line is written with one write(2) so lines never interleave. */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H
#include <jansson.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARNING, LOG_ERROR, LOG_NONE } log_level;

/* Lines below this level are dropped. Initialised from SLUICE_LOG_LEVEL (debug|info|warning|error|none). */
void log_set_level(log_level level);
log_level log_get_level(void);
int log_enabled(log_level level);

/* Writes {"severity":..,"message":..,"time":..} plus the fields of `extra` (may be NULL; borrowed). */
void log_json(log_level level, json_t *extra, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define log_debug(...) log_json(LOG_DEBUG, NULL, __VA_ARGS__)
#define log_info(...) log_json(LOG_INFO, NULL, __VA_ARGS__)
#define log_warn(...) log_json(LOG_WARNING, NULL, __VA_ARGS__)
#define log_error(...) log_json(LOG_ERROR, NULL, __VA_ARGS__)

#endif
