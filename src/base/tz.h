/* tz: time zones from the system's tzdata (/usr/share/zoneinfo, TZif files as RFC 8536 describes them): the UTC
 * offset of a zone at any instant, without touching the process-wide TZ (glibc's localtime_r reads one global zone
 * and tzset() is not safe to switch from threads, so no libc call can answer "what time is it in Amsterdam" for one
 * caller; hence this reader). Instants after the file's last transition follow its footer, a POSIX TZ rule
 * ("CET-1CEST,M3.5.0,M10.5.0/3"; the Mm.w.d form, which every zone of tzdata uses).
 * Uses: libc (file reading). Must not: keep global state; a zone is immutable once loaded and may be shared. */
#ifndef SLUICE_TZ_H
#define SLUICE_TZ_H
#include <stddef.h>
#include <stdint.h>

typedef struct tz_zone tz_zone;

/* Loads `name` ("Europe/Amsterdam", "UTC"; NULL or "" is UTC) from $SLUICE_ZONEINFO or /usr/share/zoneinfo.
 * NULL with *err (caller frees) for a name that is not a zone (absolute, "..", not TZif). Caller frees with
 * tz_free. */
tz_zone *tz_load(const char *name, char **err);
/* Parses TZif bytes (tests). NULL with *err. */
tz_zone *tz_parse(const char *name, const unsigned char *data, size_t len, char **err);
void tz_free(tz_zone *z);
const char *tz_name(const tz_zone *z);
/* The zone's offset from UTC in seconds at the instant `t` (unix seconds). */
int32_t tz_offset(const tz_zone *z, int64_t t);

#endif
