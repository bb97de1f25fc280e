/* quota: the classification of quota refusals (quota.h).
 * Uses: libc. Must not: do I/O, read clocks or keep state. */
#include "quota.h"

#include <ctype.h>
#include <stddef.h>
#include <string.h>

/* Case-insensitive strstr over ASCII. */
static int has_ci(const char *hay, const char *needle)
{
    if (hay == NULL) return 0;
    size_t n = strlen(needle);
    for (const char *p = hay; *p; p++) {
        size_t i = 0;
        while (i < n && p[i] && tolower((unsigned char)p[i]) == tolower((unsigned char)needle[i])) i++;
        if (i == n) return 1;
    }
    return 0;
}

int quota_refused(long http_status, const char *google_status, const char *reason, const char *message)
{
    static const char *const reasons[] = {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded",
                                          "QUOTA_FOR_INSTANCES", "ZONE_RESOURCE_POOL_EXHAUSTED",
                                          "RATE_LIMIT_EXCEEDED", NULL};
    static const char *const texts[] = {"quota error", "insufficient quota", "quota exceeded", "exceeded quota",
                                        "QUOTA_FOR_INSTANCES", "ZONE_RESOURCE_POOL_EXHAUSTED", "quota_exceeded",
                                        NULL};
    if (http_status == 429) return 1;
    if (google_status != NULL && strcmp(google_status, "RESOURCE_EXHAUSTED") == 0) return 1;
    if (reason != NULL)
        for (size_t i = 0; reasons[i]; i++)
            if (strcmp(reason, reasons[i]) == 0) return 1;
    /* The text only where the status allows a quota refusal at all (Dataflow answers some with 400 or 403). */
    if (http_status != 400 && http_status != 403) return 0;
    for (size_t i = 0; texts[i]; i++)
        if (has_ci(message, texts[i])) return 1;
    return 0;
}
