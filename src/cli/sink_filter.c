/* sink_filter: the log sink's filter for the loaded workflows' jobs.
 * Uses: wfset, workflow. Must not: talk to anything. */
#include "sink_filter.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "result.h"
#include "util.h"
#include "wfset.h"

/* The narrow filter for a log sink of Dataflow job ends: job-message logs of Dataflow steps, only the line every
 * job writes as it ends (for failed jobs too: Sluice confirms the state with jobs.get). `:` is Cloud Logging's
 * "has" operator, a substring match, so the clauses narrow the sink to these jobs; the job-name map in Sluice is
 * exact. */
#define SINK_FILTER_BASE                                                                                            \
    "resource.type=\"dataflow_step\" AND logName:\"dataflow.googleapis.com%2Fjob-message\" AND textPayload=\"Worker " \
    "pool stopped.\""

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

char *sink_filter_text(wf_workflow *const *wfs, size_t n)
{
    size_t count = 0, total = 0;
    for (size_t i = 0; i < n; i++) total += wfs[i]->n_steps;
    const char **names = xcalloc(total + 1, sizeof *names);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < wfs[i]->n_steps; j++)
            if (wfs[i]->steps[j].kind != WF_STEP_HOOK) names[count++] = wfs[i]->steps[j].job_name;
    qsort(names, count, sizeof *names, cmp_str);
    char *buf = NULL;
    size_t len = 0;
    if (count > 0) {
        FILE *f = util_memstream(&buf, &len);
        fputs(SINK_FILTER_BASE " AND (", f);
        for (size_t i = 0; i < count; i++)
            if (i == 0 || strcmp(names[i], names[i - 1]) != 0)
                fprintf(f, "%sresource.labels.job_name:\"%s" WF_SUFFIX_SEP "\"", i == 0 ? "" : " OR ", names[i]);
        fputc(')', f);
        fclose(f);
    }
    free(names);
    return buf;
}

/* The filter as the tfvars line of deploy/terraform's variable sink_filter (so it pastes into terraform.tfvars as
 * is): an HCL string with quotes and backslashes escaped, and "${" / "%{" kept literal. */
static void print_terraform(const char *filter)
{
    fputs("sink_filter = \"", stdout);
    for (const char *p = filter; *p; p++) {
        if (*p == '"' || *p == '\\') putchar('\\');
        if ((*p == '$' || *p == '%') && p[1] == '{') putchar(*p);
        putchar(*p);
    }
    fputs("\"\n", stdout);
}

int sink_filter_main(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {"format", required_argument, NULL, 'f'},
                                         {0, 0, 0, 0}};
    const char *format = "text";
    int c;
    while ((c = getopt_long(argc, argv, "hf:", opts, NULL)) != -1) {
        if (c == 'h') {
            fputs(SINK_FILTER_USAGE, stdout);
            return EXIT_OK;
        }
        if (c != 'f') {
            fprintf(stderr, "sluice sink-filter: unknown option %s\n(see 'sluice sink-filter --help')\n", argv[optind - 1]);
            return EXIT_USAGE;
        }
        format = optarg;
    }
    const char *bad = strcmp(format, "text") != 0 && strcmp(format, "terraform") != 0 ? "--format must be text or terraform"
                      : optind >= argc                                                 ? "give at least one file or directory"
                                                                                       : NULL;
    if (bad != NULL) {
        fprintf(stderr, "sluice sink-filter: %s\n(see 'sluice sink-filter --help')\n", bad);
        return EXIT_USAGE;
    }
    wf_diags d = {0};
    wf_set set;
    wf_set_load(&set, argv + optind, (size_t)(argc - optind), &d);
    char *filter = d.n == 0 ? sink_filter_text(set.wfs, set.n) : NULL;
    for (size_t i = 0; i < d.n; i++) fprintf(stderr, "%s\n", d.items[i]);
    if (d.n == 0 && filter == NULL) fprintf(stderr, "sluice sink-filter: the workflows have no launch steps\n");
    if (filter != NULL && strcmp(format, "terraform") == 0)
        print_terraform(filter);
    else if (filter != NULL)
        puts(filter);
    int rc = filter != NULL ? EXIT_OK : EXIT_USAGE;
    free(filter);
    wf_set_free(&set);
    wf_diags_free(&d);
    return rc;
}
