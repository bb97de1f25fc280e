/* fuzz_logentry: the log sink's LogEntry. The input decoded as a bare LogEntry body, then base64-encoded into
 * message.data of a wrapped Pub/Sub push (as the sink delivers it), so the fuzzer explores the inner decoder
 * without having to find valid base64 first. */
#include <stdio.h>

#include "events.h"
#include "fuzz.h"
#include "jwt.h"

static void decode(const char *body, size_t len)
{
    ev_job_event ev;
    char err[256], id[512];
    if (ev_decode(NULL, 0, body, len, &ev, err, sizeof err) == EV_OK) ev_identity(&ev, id, sizeof id);
    ev_job_event_free(&ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 20) return 0; /* ingress refuses bodies over --max-body (1 MiB) */
    decode((const char *)data, size);
    char *b64 = jwt_b64_encode(data, size);
    if (b64 == NULL) return 0;
    size_t cap = strlen(b64) + 128;
    char *push = malloc(cap);
    if (push != NULL) {
        int n = snprintf(push, cap,
                         "{\"message\":{\"data\":\"%s\",\"messageId\":\"1\"},\"subscription\":\"projects/p/subscriptions/s\"}",
                         b64);
        if (n > 0 && (size_t)n < cap) decode(push, (size_t)n);
        free(push);
    }
    free(b64);
    return 0;
}
