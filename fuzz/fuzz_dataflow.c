/* fuzz_dataflow: Dataflow's answers as the client reads them (df_parse_answer, the same code the calls use).
 * The input is a response body, read as each kind of 2xx answer (a Job, a jobs.list page, a launch, a
 * validateOnly launch) and as the error answers whose fields drive retries and launch safety (400 with
 * parameterViolations, 409, 429 with RetryInfo and Retry-After, 503). Its first line also goes through the
 * Retry-After and Duration parsers. The body parsed as JSON is then read as a recorded launch intent, in both
 * shapes the store holds (launch_from_json, and df_launch_parse for intents of earlier versions), and rendered
 * back (df_launch_render) when it is one. */
#include "dataflow.h"
#include "fuzz.h"
#include "launch.h"
#include "retry.h"

#define FUZZ_NOW_MS 1607051281402LL

static void answer(df_answer_kind kind, long status, const uint8_t *data, size_t size, const char *retry_after)
{
    df_result *r = df_parse_answer(kind, status, (const char *)data, size, retry_after, FUZZ_NOW_MS);
    if (r == NULL) return;
    if (r->job) {
        df_job copy;
        if (df_job_copy(&copy, r->job) == 0) df_job_clear(&copy);
    }
    df_result_free(r);
}

static void intent(launch_req *l)
{
    if (l == NULL) return;
    json_decref(df_launch_render(l, 0));
    json_decref(df_launch_render(l, DF_VALIDATE_ONLY));
    json_decref(launch_to_json(l));
    launch_free(l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    answer(DF_ANSWER_JOB, 200, data, size, NULL);
    answer(DF_ANSWER_LIST, 200, data, size, NULL);
    answer(DF_ANSWER_LAUNCH, 200, data, size, NULL);
    answer(DF_ANSWER_VALIDATE, 200, data, size, NULL);
    answer(DF_ANSWER_LAUNCH, 400, data, size, NULL);
    answer(DF_ANSWER_LAUNCH, 409, data, size, NULL);
    answer(DF_ANSWER_JOB, 429, data, size, "Wed, 21 Oct 2015 07:28:00 GMT");
    answer(DF_ANSWER_JOB, 503, data, size, "3");

    size_t line = 0;
    while (line < size && line < 256 && data[line] != '\n') line++;
    char *first = fuzz_cstr(data, line);
    int64_t ms;
    (void)retry_parse_retry_after(first, FUZZ_NOW_MS, &ms);
    (void)retry_parse_duration(first, &ms);
    free(first);

    json_t *j = json_loadb((const char *)data, size, 0, NULL);
    if (j != NULL) {
        intent(launch_from_json(j));
        intent(df_launch_parse(j));
        json_decref(j);
    }
    return 0;
}
