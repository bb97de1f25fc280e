/* wfset: workflows loaded together, validated as a set, and looked up; immutable and reference-counted.
 * Uses: workflow, wf_graph, lua_host, util, jansson, pthreads. Must not: touch the store, the engine or HTTP. */
#include "wfset.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mem.h"
#include "util.h"
#include "wf_graph.h"

typedef struct {
    const char *prefix; /* the step's job_name (borrowed from the workflow) */
    size_t wf, step;
} job_entry;

struct wfset {
    atomic_int refs;
    wf_workflow **wfs; /* each holds a reference */
    size_t n;
    int valid;
    job_entry *jobs; /* every launch step, sorted by prefix */
    size_t n_jobs;
    char **retired; /* job names of workflows that left the set in a reload, sorted */
    size_t n_retired;
    json_t *errors;
    /* The /v1/workflows document, rendered on first use (start-up need not wait for it; a set nobody lists
     * never holds it). Written once under json_mu, then read without it. */
    pthread_mutex_t json_mu;
    _Atomic(char *) json;
};

int wfset_list(const char *path, char ***files, size_t *n, wf_diags *diags)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        wf_diags_add(diags, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        *files = xrealloc(*files, (*n + 1) * sizeof **files);
        (*files)[(*n)++] = xstrdup(path);
        return 0;
    }
    DIR *dir = opendir(path);
    if (dir == NULL) {
        wf_diags_add(diags, "%s: %s", path, strerror(errno));
        return -1;
    }
    size_t first = *n;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".lua") != 0 || e->d_name[0] == '.') continue;
        *files = xrealloc(*files, (*n + 1) * sizeof **files);
        (*files)[(*n)++] = util_printf("%s%s%s", path, path[strlen(path) - 1] == '/' ? "" : "/", e->d_name);
    }
    closedir(dir);
    if (*n == first) wf_diags_add(diags, "%s: no *.lua workflow files in this directory", path);
    if (*n - first > 1) qsort(*files + first, *n - first, sizeof **files, util_strcmp_ptr);
    return 0;
}

void wf_set_load(wf_set *set, char *const *paths, size_t n_paths, wf_diags *d)
{
    memset(set, 0, sizeof *set);
    for (size_t i = 0; i < n_paths; i++) wfset_list(paths[i], &set->files, &set->n_files, d);
    set->wfs = xcalloc(set->n_files + 1, sizeof *set->wfs);
    for (size_t i = 0; i < set->n_files; i++) {
        wf_workflow *wf = wf_load_file(set->files[i], NULL, d);
        if (wf != NULL) set->wfs[set->n++] = wf;
    }
    wf_validate_set(set->wfs, set->n, d);
}

void wf_set_free(wf_set *set)
{
    for (size_t i = 0; i < set->n; i++) wf_free(set->wfs[i]);
    for (size_t i = 0; i < set->n_files; i++) free(set->files[i]);
    free(set->wfs);
    free(set->files);
    memset(set, 0, sizeof *set);
}

/* ---- parallel parsing: one scratch VM per thread validates its share of the files ---- */

typedef struct {
    char **files;
    size_t n;
    const lh_limits *limits;
    wf_workflow **wfs; /* per file, NULL when invalid */
    wf_diags *diags;   /* per file */
    atomic_size_t next;
} parse_job;

static void *parse_worker(void *arg)
{
    parse_job *pj = arg;
    /* Each workflow's own VM is created only when one of its functions first runs: idle workflows cost none. */
    lh_vm *scratch = NULL;
    for (size_t i; (i = atomic_fetch_add(&pj->next, 1)) < pj->n;) {
        if (scratch == NULL) scratch = lh_new(pj->limits, NULL);
        pj->wfs[i] = scratch ? wf_load_file_in(pj->files[i], scratch, pj->limits, &pj->diags[i])
                             : wf_load_file(pj->files[i], pj->limits, &pj->diags[i]);
        if (scratch && lh_vm_dead(scratch)) { /* a script blew its budget: the next file gets a fresh VM */
            lh_free(scratch);
            scratch = NULL;
        }
    }
    lh_free(scratch);
    return NULL;
}

static void parse_all(parse_job *pj, int threads)
{
    if (threads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        threads = pj->n < 8 ? 1 : (int)(cpus < 1 ? 1 : cpus > 4 ? 4 : cpus);
    }
    pthread_t th[8];
    int started = 0;
    for (int t = 1; t < threads && t < 8; t++)
        if (pthread_create(&th[started], NULL, parse_worker, pj) == 0) started++;
    parse_worker(pj); /* this thread takes a share too (all of it when no thread started) */
    for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
}

/* ---- building a set ---- */

static void add_errors(json_t *errors, const char *file, const wf_diags *d, size_t from)
{
    if (d->n <= from) return;
    json_t *list = json_array();
    for (size_t k = from; k < d->n; k++) json_array_append_new(list, json_string(d->items[k]));
    json_array_append_new(errors, json_pack("{s:s,s:o}", "file", file, "errors", list));
}

static wf_workflow *previous_of(const wfset *prev, const char *file)
{
    for (size_t i = 0; prev && i < prev->n; i++)
        if (strcmp(prev->wfs[i]->path, file) == 0) return prev->wfs[i];
    return NULL;
}

static int job_cmp(const void *a, const void *b)
{
    return strcmp(((const job_entry *)a)->prefix, ((const job_entry *)b)->prefix);
}

static void build_index(wfset *s)
{
    size_t cap = 0;
    for (size_t i = 0; i < s->n; i++) cap += s->wfs[i]->n_steps;
    s->jobs = xcalloc(cap ? cap : 1, sizeof *s->jobs);
    for (size_t i = 0; i < s->n; i++)
        for (size_t k = 0; k < s->wfs[i]->n_steps; k++) {
            const wf_step *st = &s->wfs[i]->steps[k];
            if (st->kind != WF_STEP_HOOK && st->job_name) s->jobs[s->n_jobs++] = (job_entry){st->job_name, i, k};
        }
    if (s->n_jobs > 1) qsort(s->jobs, s->n_jobs, sizeof *s->jobs, job_cmp);
}

/* Job names of `prev` (and what it had retired) that the new set no longer has. */
static void carry_retired(wfset *s, const wfset *prev)
{
    if (prev == NULL) return;
    size_t cap = prev->n_retired + prev->n_jobs;
    s->retired = xcalloc(cap ? cap : 1, sizeof *s->retired);
    for (size_t i = 0; i < prev->n_retired; i++)
        if (!wfset_step_for_job(s, prev->retired[i], NULL)) s->retired[s->n_retired++] = xstrdup(prev->retired[i]);
    for (size_t i = 0; i < prev->n_jobs; i++)
        if (!wfset_step_for_job(s, prev->jobs[i].prefix, NULL)) s->retired[s->n_retired++] = xstrdup(prev->jobs[i].prefix);
    if (s->n_retired > 1) qsort(s->retired, s->n_retired, sizeof *s->retired, util_strcmp_ptr);
}

json_t *wfset_workflow_json(const wf_workflow *wf, int with_source)
{
    static const char *const kinds[] = {"hook", "flex", "classic"};
    json_t *steps = json_array(), *params = json_array();
    for (size_t k = 0; k < wf->n_steps; k++) {
        const wf_step *st = &wf->steps[k];
        json_array_append_new(steps, json_pack("{s:s,s:s,s:s?}", "name", st->name, "kind", kinds[st->kind], "job_name",
                                               st->job_name));
    }
    for (size_t k = 0; k < wf->n_params; k++) {
        const wf_param *p = &wf->params[k];
        json_array_append_new(params, json_pack("{s:s,s:b,s:O?,s:s?}", "name", p->name, "required", p->required,
                                                "default", p->def, "description", p->description));
    }
    json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:o,s:b,s:o,s:o}", "name", wf->name, "file", wf->path, "version",
                          wf->version, "start", wf->start, "steps", steps, "declares_params", wf->declares_params,
                          "params", params, "graph", wf_graph_json(wf));
    if (j && with_source) json_object_set_new(j, "source", json_stringn(wf->source, wf->source_len));
    return j;
}

static char *build_json(const wfset *s)
{
    json_t *list = json_array();
    for (size_t i = 0; i < s->n; i++) json_array_append_new(list, wfset_workflow_json(s->wfs[i], 0));
    json_t *doc = json_pack("{s:o,s:O}", "workflows", list, "errors", s->errors);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return text;
}

wfset *wfset_load(const wfset_options *o)
{
    wfset *s = xcalloc(1, sizeof *s);
    atomic_init(&s->refs, 1);
    atomic_init(&s->json, NULL);
    pthread_mutex_init(&s->json_mu, NULL);
    s->valid = 1;
    s->errors = json_array();
    char **files = NULL;
    size_t nf = 0;
    for (size_t p = 0; p < o->n_paths; p++) {
        wf_diags d = {0};
        wfset_list(o->paths[p], &files, &nf, &d);
        add_errors(s->errors, o->paths[p], &d, 0);
        wf_diags_free(&d);
    }
    parse_job pj = {.files = files, .n = nf, .limits = o->limits, .wfs = xcalloc(nf + 1, sizeof(wf_workflow *)),
                    .diags = xcalloc(nf + 1, sizeof(wf_diags))};
    parse_all(&pj, o->threads);
    s->wfs = xcalloc(nf + 1, sizeof *s->wfs);
    for (size_t i = 0; i < nf; i++) {
        wf_diags *d = &pj.diags[i];
        wf_workflow *wf = pj.wfs[i];
        if (wf == NULL && (wf = previous_of(o->previous, files[i])) != NULL) {
            /* A broken edit never replaces a good version: the file keeps serving what it served. */
            wf_diags_add(d, "%s: not reloaded: the version loaded before (%.12s) stays in use", files[i], wf->version);
            wf_ref(wf);
        }
        for (size_t k = 0; wf && k < s->n; k++)
            if (strcmp(s->wfs[k]->name, wf->name) == 0) {
                wf_diags_add(d, "%s: workflow '%s' is already defined by %s", files[i], wf->name, s->wfs[k]->path);
                if (o->previous) s->valid = 0;
                wf_free(wf);
                wf = NULL;
            }
        if (wf) s->wfs[s->n++] = wf;
        add_errors(s->errors, files[i], d, 0);
        wf_diags_free(d);
        free(files[i]);
    }
    free(files);
    free(pj.wfs);
    free(pj.diags);
    wf_diags set = {0};
    if (wf_validate_set(s->wfs, s->n, &set) > 0 && o->previous) s->valid = 0;
    add_errors(s->errors, o->n_paths == 1 ? o->paths[0] : "workflows", &set, 0);
    wf_diags_free(&set);
    build_index(s);
    carry_retired(s, o->previous);
    return s;
}

wfset *wfset_ref(wfset *s)
{
    if (s) atomic_fetch_add(&s->refs, 1);
    return s;
}

void wfset_unref(wfset *s)
{
    if (s == NULL || atomic_fetch_sub(&s->refs, 1) > 1) return;
    for (size_t i = 0; i < s->n; i++) wf_free(s->wfs[i]);
    free(s->wfs);
    free(s->jobs);
    for (size_t i = 0; i < s->n_retired; i++) free(s->retired[i]);
    free(s->retired);
    json_decref(s->errors);
    free(atomic_load(&s->json));
    pthread_mutex_destroy(&s->json_mu);
    free(s);
}

int wfset_valid(const wfset *s) { return s->valid; }
size_t wfset_count(const wfset *s) { return s ? s->n : 0; }
wf_workflow *wfset_at(const wfset *s, size_t i) { return i < s->n ? s->wfs[i] : NULL; }

wf_workflow *wfset_find(const wfset *s, const char *name)
{
    for (size_t i = 0; s && i < s->n; i++)
        if (strcmp(s->wfs[i]->name, name) == 0) return s->wfs[i];
    return NULL;
}

/* The part of a job name before "--" into buf; 0, or -1 when it cannot be a step's job name. */
static int job_prefix(const char *job_name, char *buf, size_t cap)
{
    const char *sep = strstr(job_name, WF_SUFFIX_SEP);
    size_t n = sep ? (size_t)(sep - job_name) : strlen(job_name);
    if (n >= cap) return -1;
    memcpy(buf, job_name, n);
    buf[n] = '\0';
    return 0;
}

const wf_step *wfset_step_for_job(const wfset *s, const char *job_name, const wf_workflow **wf)
{
    char prefix[WF_JOB_NAME_MAX + 1];
    if (s == NULL || job_name == NULL || job_prefix(job_name, prefix, sizeof prefix) != 0) return NULL;
    job_entry key = {.prefix = prefix};
    const job_entry *e = s->n_jobs ? bsearch(&key, s->jobs, s->n_jobs, sizeof *s->jobs, job_cmp) : NULL;
    if (e == NULL) return NULL;
    if (wf) *wf = s->wfs[e->wf];
    return &s->wfs[e->wf]->steps[e->step];
}

int wfset_job_known(const wfset *s, const char *job_name)
{
    if (wfset_step_for_job(s, job_name, NULL)) return 1;
    char prefix[WF_JOB_NAME_MAX + 1];
    if (s == NULL || job_name == NULL || job_prefix(job_name, prefix, sizeof prefix) != 0) return 0;
    const char *key = prefix;
    return s->n_retired > 0 && bsearch(&key, s->retired, s->n_retired, sizeof *s->retired, util_strcmp_ptr) != NULL;
}

const wf_step *wfset_first_launch_step(const wf_workflow *wf)
{
    const wf_step *fs = &wf->steps[wf->start_index];
    for (int hops = 0; fs->kind == WF_STEP_HOOK && fs->next_kind == WF_NEXT_STATIC && fs->n_next == 1 && hops < 64;
         hops++) {
        int ni = wf_step_index(wf, fs->next[0]);
        if (ni < 0) return NULL;
        fs = &wf->steps[ni];
    }
    return fs->kind != WF_STEP_HOOK && fs->job_name ? fs : NULL;
}

json_t *wfset_errors(const wfset *s) { return s->errors; }
const char *wfset_json(const wfset *cs)
{
    wfset *s = (wfset *)cs; /* the rendered document is cache state, not part of the set */
    char *text = atomic_load_explicit(&s->json, memory_order_acquire);
    if (text != NULL) return text;
    pthread_mutex_lock(&s->json_mu);
    if ((text = atomic_load_explicit(&s->json, memory_order_relaxed)) == NULL) {
        text = build_json(s);
        atomic_store_explicit(&s->json, text, memory_order_release);
    }
    pthread_mutex_unlock(&s->json_mu);
    return text;
}

/* ---- the current set ---- */

struct wfset_box {
    pthread_mutex_t mu;
    wfset *cur;
};

wfset_box *wfset_box_new(wfset *initial)
{
    wfset_box *b = xcalloc(1, sizeof *b);
    pthread_mutex_init(&b->mu, NULL);
    b->cur = initial;
    return b;
}

void wfset_box_free(wfset_box *b)
{
    if (b == NULL) return;
    wfset_unref(b->cur);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

wfset *wfset_box_get(wfset_box *b)
{
    pthread_mutex_lock(&b->mu);
    wfset *s = wfset_ref(b->cur);
    pthread_mutex_unlock(&b->mu);
    return s;
}

void wfset_box_put(wfset_box *b, wfset *next)
{
    pthread_mutex_lock(&b->mu);
    wfset *old = b->cur;
    b->cur = next;
    pthread_mutex_unlock(&b->mu);
    wfset_unref(old);
}
