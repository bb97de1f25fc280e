/* workflow: the workflow model, validation, job naming and launch requests (as plain data).
 * Uses: lua_host (the only way into the script), launch, jansson, util, log.
 * Must not: talk to Dataflow or build its REST requests, touch the store, or call Lua except through lua_host. */
#include "workflow.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define WF_JOB_PREFIX_MAX 960 /* leaves room for "--<run id>-<attempt>" under Dataflow's 1024 */

/* ---- diagnostics ---- */

void wf_diags_add(wf_diags *d, const char *fmt, ...)
{
    if (d == NULL) return;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        char **items = realloc(d->items, cap * sizeof *items);
        if (items == NULL) return;
        d->items = items;
        d->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) >= 0) d->items[d->n++] = s;
    va_end(ap);
}

void wf_diags_free(wf_diags *d)
{
    for (size_t i = 0; i < d->n; i++) free(d->items[i]);
    free(d->items);
    memset(d, 0, sizeof *d);
}

/* ---- Dataflow naming rules ---- */

int wf_job_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > WF_JOB_NAME_MAX || !islower((unsigned char)name[0])) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!(islower(c) || isdigit(c) || c == '-') || !isascii(c)) return 0;
    }
    return name[n - 1] != '-';
}

static int label_chars_valid(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!isascii(c) || !(islower(c) || isdigit(c) || c == '_' || c == '-')) return 0;
    }
    return 1;
}

int wf_label_key_valid(const char *key)
{
    size_t n = strlen(key);
    return n >= 1 && n <= 63 && islower((unsigned char)key[0]) && isascii((unsigned char)key[0]) &&
           label_chars_valid(key);
}

int wf_label_value_valid(const char *value) { return strlen(value) <= 63 && label_chars_valid(value); }

int wf_labels_check(json_t *labels, char *err, size_t errlen)
{
    if (!json_is_object(labels)) {
        snprintf(err, errlen, "labels must be a table of strings");
        return -1;
    }
    if (json_object_size(labels) > 64) {
        snprintf(err, errlen, "%zu labels: Dataflow allows at most 64", json_object_size(labels));
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(labels, k, v) {
        if (!wf_label_key_valid(k)) {
            snprintf(err, errlen,
                     "label key '%s' is invalid: 1-63 characters, starting with a lowercase letter, "
                     "only lowercase letters, digits, '_' and '-'", k);
            return -1;
        }
        if (!json_is_string(v)) {
            snprintf(err, errlen, "label '%s' must be a string", k);
            return -1;
        }
        if (!wf_label_value_valid(json_string_value(v))) {
            snprintf(err, errlen,
                     "label '%s' has invalid value '%s': at most 63 lowercase letters, digits, '_' and '-'", k,
                     json_string_value(v));
            return -1;
        }
    }
    return 0;
}

/* Cloud Storage's bucket-name rules, as the Cloud Storage documentation gives them. */
const char *wf_bucket_name_problem(const char *b, size_t n)
{
    int dots = 0, digits_and_dots = 1;
    size_t part = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        if (!isascii(c) || !(islower(c) || isdigit(c) || c == '-' || c == '_' || c == '.'))
            return "may only contain lowercase letters, digits, '-', '_' and '.'";
        if (c == '.') {
            if (part == 0 || part > 63) return "has a dot-separated part that is empty or longer than 63 characters";
            dots++;
            part = 0;
        } else {
            part++;
            if (!isdigit(c)) digits_and_dots = 0;
        }
    }
    if (n < 3) return "is shorter than 3 characters";
    if (!isalnum((unsigned char)b[0]) || !isalnum((unsigned char)b[n - 1])) return "must start and end with a letter or digit";
    if (dots == 0 && n > 63) return "is longer than 63 characters (222 with dots)";
    if (n > 222) return "is longer than 222 characters";
    if (part > 63) return "has a dot-separated part that is empty or longer than 63 characters";
    if (dots == 3 && digits_and_dots) return "must not be an IP address";
    if (strncmp(b, "goog", 4) == 0) return "must not start with 'goog'";
    if (memmem(b, n, "google", 6) != NULL || memmem(b, n, "g00gle", 6) != NULL)
        return "must not contain 'google' (or a close misspelling such as 'g00gle')";
    return NULL;
}

int wf_gcs_path_check(const char *path, char *err, size_t errlen)
{
    if (strncmp(path, "gs://", 5) != 0) return 0;
    const char *b = path + 5, *slash = strchr(b, '/');
    size_t n = slash ? (size_t)(slash - b) : strlen(b);
    const char *why = wf_bucket_name_problem(b, n);
    if (why == NULL) return 0;
    snprintf(err, errlen, "bucket name '%.*s' %s", (int)(n > 80 ? 80 : n), b, why);
    return -1;
}

static char *label_of(const char *s)
{
    size_t n = strlen(s);
    if (n > 63) n = 63;
    char *out = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        c = (unsigned char)tolower(c);
        out[i] = (isascii(c) && (islower(c) || isdigit(c) || c == '_' || c == '-')) ? (char)c : '-';
    }
    out[n] = '\0';
    return out;
}

int wf_launch_name(const wf_step *step, const char *run_id, int attempt, char *buf, size_t buflen)
{
    /* Only names wf_parse_launch_name can read back: a [a-z0-9]+ run id and an attempt in 1..1000000. */
    if (run_id[0] == '\0' || attempt < 1 || attempt > 1000000) return -1;
    for (const char *p = run_id; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p)) || !isascii((unsigned char)*p)) return -1;
    int n = snprintf(buf, buflen, "%s" WF_SUFFIX_SEP "%s-%d", step->job_name, run_id, attempt);
    if (n < 0 || (size_t)n >= buflen || n > WF_JOB_NAME_MAX || !wf_job_name_valid(buf)) return -1;
    return 0;
}

int wf_parse_launch_name(const char *name, char *run_id, size_t run_len, int *attempt)
{
    const char *sep = strstr(name, WF_SUFFIX_SEP);
    if (sep == NULL) return -1;
    const char *suffix = sep + strlen(WF_SUFFIX_SEP);
    const char *dash = strrchr(suffix, '-');
    if (dash == NULL || dash == suffix || dash[1] == '\0') return -1;
    size_t rl = (size_t)(dash - suffix);
    if (rl + 1 > run_len) return -1;
    for (const char *p = suffix; p < dash; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p))) return -1;
    char *end = NULL;
    long a = strtol(dash + 1, &end, 10);
    if (*end != '\0' || a < 1 || a > 1000000) return -1;
    memcpy(run_id, suffix, rl);
    run_id[rl] = '\0';
    *attempt = (int)a;
    return 0;
}

const char *wf_state_name(const char *state, char *buf, size_t buflen)
{
    const char *s = state;
    if (strncasecmp(s, "JOB_STATE_", 10) == 0) s += 10;
    int n = snprintf(buf, buflen, "JOB_STATE_");
    for (size_t i = 0; s[i] && (size_t)n + 1 < buflen; i++) buf[n++] = (char)toupper((unsigned char)s[i]);
    buf[n] = '\0';
    return buf;
}

int wf_state_known(const char *state)
{
    static const char *const all[] = {"UNKNOWN", "STOPPED", "RUNNING", "DONE", "FAILED", "CANCELLED", "UPDATED",
                                      "DRAINING", "DRAINED", "PENDING", "CANCELLING", "QUEUED",
                                      "RESOURCE_CLEANING_UP", "PAUSING", "PAUSED", NULL};
    char norm[64];
    if (strlen(state) >= sizeof norm - 10) return 0;
    wf_state_name(state, norm, sizeof norm);
    for (const char *const *a = all; *a; a++)
        if (strcmp(norm + 10, *a) == 0) return 1;
    return 0;
}

int wf_step_success(const wf_step *step, const char *state)
{
    char norm[64];
    wf_state_name(state, norm, sizeof norm);
    for (size_t i = 0; i < step->n_success; i++)
        if (strcmp(step->success[i], norm) == 0) return 1;
    return 0;
}

double wf_retry_delay(const wf_step *step, int next_attempt)
{
    double d = step->retry_backoff * pow(2.0, (double)(next_attempt - 2));
    return d > step->retry_max_backoff ? step->retry_max_backoff : d;
}

/* ---- model lifetime ---- */

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

wf_workflow *wf_ref(wf_workflow *wf)
{
    if (wf != NULL) atomic_fetch_add(&wf->refs, 1);
    return wf;
}

void wf_free(wf_workflow *wf)
{
    if (wf == NULL || atomic_fetch_sub(&wf->refs, 1) > 1) return;
    for (size_t i = 0; i < wf->n_steps; i++) {
        wf_step *s = &wf->steps[i];
        free(s->name);
        free(s->label);
        free(s->job_name);
        free(s->template);
        free(s->fn_name);
        json_decref(s->parameters);
        json_decref(s->environment);
        free(s->project);
        free(s->region);
        free_strv(s->next, s->n_next);
        free(s->on_failure);
        free_strv(s->success, s->n_success);
        free(s->preds);
    }
    free(wf->steps);
    free(wf->name);
    free(wf->path);
    free(wf->version);
    free(wf->source);
    free(wf->project);
    free(wf->region);
    json_decref(wf->environment);
    json_decref(wf->labels);
    free(wf->start);
    for (size_t i = 0; i < wf->n_params; i++) {
        free(wf->params[i].name);
        json_decref(wf->params[i].def);
        free(wf->params[i].description);
    }
    free(wf->params);
    lh_free(wf->vm);
    free(wf);
}

int wf_step_index(const wf_workflow *wf, const char *name)
{
    size_t lo = 0, hi = wf->n_steps;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(wf->steps[mid].name, name);
        if (c == 0) return (int)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

int wf_names_every_project(const wf_workflow *wf)
{
    for (size_t i = 0; i < wf->n_steps; i++)
        if (wf->steps[i].kind != WF_STEP_HOOK && wf->steps[i].project == NULL && wf->project == NULL) return 0;
    return 1;
}

const wf_step *wf_step_for_job(const wf_workflow *wf, const char *job_name)
{
    const char *sep = strstr(job_name, WF_SUFFIX_SEP);
    size_t n = sep ? (size_t)(sep - job_name) : strlen(job_name);
    for (size_t i = 0; i < wf->n_steps; i++) {
        const wf_step *s = &wf->steps[i];
        if (s->kind != WF_STEP_HOOK && strlen(s->job_name) == n && strncmp(s->job_name, job_name, n) == 0) return s;
    }
    return NULL;
}

/* ---- where things are declared: a light scan of the source ----
 * Lua keeps no line numbers for table constructors, so problems are placed by scanning the source once: every
 * `key =` and `["key"] =` field of every table constructor, the table it is in and the table its value opens.
 * Strings and comments are skipped, so text inside them never matches, and several fields on one line each get
 * that line. A declaration built by code (loops, tables assigned elsewhere) leaves gaps; the lookups below
 * then fall back to the nearest enclosing thing that is known: a field to its step, a step to the steps table,
 * that to the workflow's table. */

typedef struct {
    char *key;
    int line;
    int table; /* the constructor the field is in */
    int value; /* the constructor its value is, -1 if the value is something else */
} src_field;

typedef struct {
    int line;   /* of its '{' */
    int parent; /* the constructor it is nested in, -1 at the top */
} src_table;

typedef struct {
    src_field *fields;
    size_t n_fields;
    src_table *tables;
    size_t n_tables;
    int decl;  /* the workflow's table: the top-level constructor with the most workflow fields; -1 if none */
    int steps; /* the constructor given as its `steps`, -1 if none */
} src_index;

enum { SRC_TABLE, SRC_PAREN, SRC_BRACKET, SRC_BLOCK };
typedef struct {
    int kind;  /* SRC_*: what is open: a constructor, parentheses, brackets, or a block (function, if, do, ...) */
    int table; /* SRC_TABLE: its index */
} src_frame;

/* Skips a long bracket ("[[", "[==[") starting at p; counts newlines into *line. Returns the position after its
 * close (or the end of the text), or NULL if p does not open one. */
static const char *skip_long_bracket(const char *p, int *line)
{
    if (*p != '[') return NULL;
    size_t level = 0;
    const char *q = p + 1;
    while (*q == '=') q++, level++;
    if (*q != '[') return NULL;
    for (q++; *q; q++) {
        if (*q == '\n') (*line)++;
        if (*q != ']') continue;
        const char *r = q + 1;
        size_t l = 0;
        while (*r == '=') r++, l++;
        if (l == level && *r == ']') return r + 1;
    }
    return q;
}

/* Skips a quoted string starting at p (its quote); returns the position after the closing quote. */
static const char *skip_quoted(const char *p, int *line)
{
    char quote = *p++;
    for (; *p && *p != quote; p++) {
        if (*p == '\\' && p[1] != '\0') p++;
        if (*p == '\n') (*line)++;
    }
    return *p ? p + 1 : p;
}

static const char *skip_space(const char *p, int *line)
{
    for (;; p++) {
        if (*p == '\n')
            (*line)++;
        else if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\f' && *p != '\v')
            return p;
    }
}

static void src_add_field(src_index *ix, const char *key, size_t len, int line, int table)
{
    src_field *f = realloc(ix->fields, (ix->n_fields + 1) * sizeof *f);
    if (f == NULL) return;
    ix->fields = f;
    ix->fields[ix->n_fields++] = (src_field){strndup(key, len), line, table, -1};
}

static int src_field_in(const src_index *ix, int table, const char *key)
{
    if (table < 0) return -1;
    for (size_t i = 0; i < ix->n_fields; i++)
        if (ix->fields[i].table == table && strcmp(ix->fields[i].key, key) == 0) return (int)i;
    return -1;
}

static void src_index_build(src_index *ix, const char *src)
{
    memset(ix, 0, sizeof *ix);
    ix->decl = ix->steps = -1;
    src_frame stack[256];
    size_t sp = 0;
    int line = 1, after_sep = 0, pending = -1; /* after '{' ',' ';' inside a constructor; field awaiting its value */
    const char *p = src;
    while (*p) {
        p = skip_space(p, &line);
        if (*p == '\0') break;
        int in_table = sp > 0 && stack[sp - 1].kind == SRC_TABLE, sep = 0, field = -1;
        const char *q;
        if (p[0] == '-' && p[1] == '-') {
            q = skip_long_bracket(p + 2, &line);
            if (q == NULL) {
                q = strchr(p, '\n');
                if (q == NULL) q = p + strlen(p);
            }
            p = q;
            continue; /* a comment changes nothing */
        } else if (*p == '"' || *p == '\'') {
            p = skip_quoted(p, &line);
        } else if ((q = skip_long_bracket(p, &line)) != NULL) {
            p = q;
        } else if (*p == '[') {
            /* ["key"] = : a field when it starts an entry of a constructor */
            int l = line;
            const char *k = skip_space(p + 1, &l), *end = NULL;
            if (in_table && after_sep && (*k == '"' || *k == '\'')) {
                end = skip_quoted(k, &l);
                const char *r = skip_space(end, &l);
                if (*r == ']') {
                    r = skip_space(r + 1, &l);
                    if (*r == '=' && r[1] != '=') {
                        src_add_field(ix, k + 1, (size_t)(end - k - 2), line, stack[sp - 1].table);
                        field = (int)ix->n_fields - 1;
                        line = l;
                        p = r + 1;
                    }
                }
            }
            if (field < 0) {
                if (sp < 256) stack[sp++].kind = SRC_BRACKET;
                p++;
            }
        } else if (*p == '{') {
            src_table *t = realloc(ix->tables, (ix->n_tables + 1) * sizeof *t);
            if (t != NULL) {
                int parent = -1;
                for (size_t i = sp; i > 0 && parent < 0; i--)
                    if (stack[i - 1].kind == SRC_TABLE) parent = stack[i - 1].table;
                ix->tables = t;
                ix->tables[ix->n_tables] = (src_table){line, parent};
                if (pending >= 0) ix->fields[pending].value = (int)ix->n_tables;
                if (sp < 256) stack[sp++] = (src_frame){SRC_TABLE, (int)ix->n_tables};
                ix->n_tables++;
            }
            sep = 1;
            p++;
        } else if (*p == '}' || *p == ')' || *p == ']') {
            int want = *p == '}' ? SRC_TABLE : *p == ')' ? SRC_PAREN : SRC_BRACKET;
            while (sp > 0 && stack[sp - 1].kind != want && stack[sp - 1].kind != SRC_BLOCK) sp--;
            if (sp > 0 && stack[sp - 1].kind == want) sp--;
            p++;
        } else if (*p == '(') {
            if (sp < 256) stack[sp++].kind = SRC_PAREN;
            p++;
        } else if (isalpha((unsigned char)*p) || *p == '_') {
            q = p;
            while (isalnum((unsigned char)*q) || *q == '_') q++;
            size_t n = (size_t)(q - p);
#define KW(w) (n == sizeof(w) - 1 && strncmp(p, w, n) == 0)
            if (KW("function") || KW("if") || KW("do") || KW("repeat")) {
                if (sp < 256) stack[sp++].kind = SRC_BLOCK;
            } else if (KW("end") || KW("until")) {
                if (sp > 0 && stack[sp - 1].kind == SRC_BLOCK) sp--;
            } else if (in_table && after_sep) {
                int l = line;
                const char *r = skip_space(q, &l);
                if (*r == '=' && r[1] != '=') {
                    src_add_field(ix, p, n, line, stack[sp - 1].table);
                    field = (int)ix->n_fields - 1;
                    line = l;
                    q = r + 1;
                }
            }
#undef KW
            p = q;
        } else if (isdigit((unsigned char)*p)) {
            while (isalnum((unsigned char)*p) || *p == '.') p++;
        } else {
            sep = *p == ',' || *p == ';';
            p++;
        }
        after_sep = sep;
        pending = field;
    }
    /* The workflow's table: of the top-level constructors, the one with the most workflow fields. */
    static const char *const wf_fields[] = {"name", "start", "steps", "region", "project", NULL};
    int best = 0;
    for (size_t t = 0; t < ix->n_tables; t++) {
        if (ix->tables[t].parent != -1) continue;
        int score = 0;
        for (const char *const *k = wf_fields; *k; k++) score += src_field_in(ix, (int)t, *k) >= 0;
        if (score > best) {
            best = score;
            ix->decl = (int)t;
        }
    }
    int f = src_field_in(ix, ix->decl, "steps");
    ix->steps = f >= 0 ? ix->fields[f].value : -1;
}

static void src_index_free(src_index *ix)
{
    for (size_t i = 0; i < ix->n_fields; i++) free(ix->fields[i].key);
    free(ix->fields);
    free(ix->tables);
    memset(ix, 0, sizeof *ix);
}

/* The line of the field reached by following `path` (NULL-terminated keys) from `table`; when the path breaks
 * off, the line of the last field found, else `fallback`. */
static int src_path_line(const src_index *ix, int table, int fallback, const char *const *path)
{
    int line = fallback;
    for (; *path && table >= 0; path++) {
        int f = src_field_in(ix, table, *path);
        if (f < 0) break;
        line = ix->fields[f].line;
        table = ix->fields[f].value;
    }
    return line;
}

/* ---- loading: from the declaration (plain data from lua_host) to the model ---- */

typedef struct {
    wf_workflow *wf;
    wf_diags *diags;
    int errors;
    lh_vm *vm; /* where the script runs for validation */
    src_index src;
} loader;

static void problem(loader *ld, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void problem(loader *ld, int line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0)
        wf_diags_add(ld->diags, "%s:%d: %s", ld->wf->path, line, msg);
    else
        wf_diags_add(ld->diags, "%s: %s", ld->wf->path, msg);
    ld->errors++;
}

#define PATH(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Where the workflow's table starts; 0 if the scan found none. */
static int decl_line(const loader *ld) { return ld->src.decl >= 0 ? ld->src.tables[ld->src.decl].line : 0; }

/* The line of a workflow field (a path from the workflow's table), else the declaration's. */
static int wf_line(const loader *ld, const char *const *path)
{
    return src_path_line(&ld->src, ld->src.decl, decl_line(ld), path);
}

/* The constructor of step `name` (-1 if none was found) and its line into *line: the step's key in the steps
 * table; else, for steps declared apart from the workflow's table, a field of that name whose value is a
 * table; else the line of `steps`, else the declaration's. */
static int step_table(const loader *ld, const char *name, int *line)
{
    const src_index *ix = &ld->src;
    int f = src_field_in(ix, ix->steps, name);
    for (size_t i = 0; f < 0 && i < ix->n_fields; i++)
        if (ix->fields[i].value >= 0 && ix->fields[i].table != ix->decl && strcmp(ix->fields[i].key, name) == 0)
            f = (int)i;
    if (f >= 0) {
        *line = ix->fields[f].line;
        return ix->fields[f].value;
    }
    *line = wf_line(ld, PATH("steps"));
    return -1;
}

/* The line of a field of step s (a path from its table), else the step's. */
static int step_line(const loader *ld, const wf_step *s, const char *const *path)
{
    int line = 0, t = step_table(ld, s->name, &line);
    return src_path_line(&ld->src, t, s->line, path);
}

static int is_fn(json_t *v) { return json_is_object(v) && json_object_get(v, "$fn") != NULL; }
static int fn_ref(json_t *v) { return (int)json_integer_value(json_object_get(v, "$fn")); }

static const char *type_name(json_t *v)
{
    if (v == NULL) return "nil";
    if (is_fn(v)) return "function";
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "table";
    case JSON_ARRAY: return "list";
    case JSON_STRING: return "string";
    case JSON_INTEGER:
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "nil";
    }
}

static char *opt_string(loader *ld, int line, json_t *obj, const char *key, const char *what)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v)) return NULL;
    if (!json_is_string(v)) {
        problem(ld, line, "%s '%s' must be a string, not a %s", what, key, type_name(v));
        return NULL;
    }
    return strdup(json_string_value(v));
}

/* Parses "90", 90, "90s", "30m", "2h", "1d" into seconds; -1 if invalid. */
static double parse_duration(json_t *v)
{
    if (json_is_number(v)) return json_number_value(v) >= 0 ? json_number_value(v) : -1;
    if (!json_is_string(v)) return -1;
    const char *s = json_string_value(v);
    char *end = NULL;
    double d = strtod(s, &end);
    if (end == s || d < 0 || !isfinite(d)) return -1;
    if (*end == '\0' || strcmp(end, "s") == 0) return d;
    if (strcmp(end, "ms") == 0) return d / 1000.0;
    if (strcmp(end, "m") == 0) return d * 60;
    if (strcmp(end, "h") == 0) return d * 3600;
    if (strcmp(end, "d") == 0) return d * 86400;
    return -1;
}

static int in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0) return 1;
    return 0;
}

static char **string_list(loader *ld, int line, json_t *v, const char *what, size_t *n)
{
    *n = 0;
    if (json_is_string(v)) {
        char **out = malloc(sizeof *out);
        out[0] = strdup(json_string_value(v));
        *n = 1;
        return out;
    }
    if (!json_is_array(v)) {
        problem(ld, line, "%s must be a string or a list of strings, not a %s", what, type_name(v));
        return NULL;
    }
    char **out = calloc(json_array_size(v) + 1, sizeof *out);
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
        if (!json_is_string(x)) {
            problem(ld, line, "%s[%zu] must be a string, not a %s", what, i + 1, type_name(x));
            continue;
        }
        out[(*n)++] = strdup(json_string_value(x));
    }
    return out;
}

static const char *const step_keys[] = {"job_name", "template", "classic_template", "function", "parameters",
                                        "environment", "project", "region", "next", "choices", "on_failure",
                                        "retry", "timeout", "success", "on_cancel", "description", NULL};
static const char *const workflow_keys[] = {"name", "project", "region", "environment", "labels", "start",
                                            "steps", "on_run_failure", "description", "params", NULL};
static const char *const known_states[] = {"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
                                           "JOB_STATE_UPDATED", "JOB_STATE_DRAINED", "JOB_STATE_RUNNING", NULL};

static int cmp_param(const void *a, const void *b)
{
    return strcmp(((const wf_param *)a)->name, ((const wf_param *)b)->name);
}

/* "a, b, c" (caller frees). */
static char *declared_names(const wf_workflow *wf)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    for (size_t i = 0; f && i < wf->n_params; i++) fprintf(f, "%s%s", i ? ", " : "", wf->params[i].name);
    if (f) fclose(f);
    return buf ? buf : strdup("");
}

/* params = { name = { required = true, default = "...", description = "..." }, ... } */
static void load_params(loader *ld, json_t *v)
{
    wf_workflow *wf = ld->wf;
    if (v == NULL || json_is_null(v)) return;
    int line = wf_line(ld, PATH("params"));
    if (!json_is_object(v) || is_fn(v)) {
        problem(ld, line, "params must be a table of parameter declarations, not a %s", type_name(v));
        return;
    }
    wf->declares_params = 1;
    wf->params = calloc(json_object_size(v) + 1, sizeof *wf->params);
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        int pl = wf_line(ld, PATH("params", k));
        wf_param *p = &wf->params[wf->n_params++];
        p->name = strdup(k);
        if (!json_is_object(x) || is_fn(x)) {
            problem(ld, pl, "param '%s' must be a table {required, default, description}, not a %s", k, type_name(x));
            continue;
        }
        const char *f;
        json_t *y;
        json_object_foreach(x, f, y) {
            if (!in_list(f, (const char *const[]){"required", "default", "description", NULL}))
                problem(ld, pl, "param '%s': unknown field '%s' (required, default, description)", k, f);
        }
        json_t *req = json_object_get(x, "required"), *def = json_object_get(x, "default"),
               *desc = json_object_get(x, "description");
        if (req != NULL && !json_is_boolean(req)) problem(ld, pl, "param '%s': required must be true or false", k);
        p->required = json_is_true(req);
        if (def != NULL && !json_is_string(def) && !json_is_number(def) && !json_is_boolean(def))
            problem(ld, pl, "param '%s': default must be a string, number or boolean, not a %s", k, type_name(def));
        else if (def != NULL)
            p->def = json_incref(def);
        if (p->required && p->def) problem(ld, pl, "param '%s' is required and has a default: choose one", k);
        if (desc != NULL && !json_is_string(desc)) problem(ld, pl, "param '%s': description must be a string", k);
        else if (desc != NULL) p->description = strdup(json_string_value(desc));
    }
    qsort(wf->params, wf->n_params, sizeof *wf->params, cmp_param);
}

int wf_apply_params(const wf_workflow *wf, json_t *params, char **err)
{
    if (!wf->declares_params) return 0;
    const char *k;
    json_t *v;
    json_object_foreach(params, k, v) {
        int known = 0;
        for (size_t i = 0; i < wf->n_params && !known; i++) known = strcmp(wf->params[i].name, k) == 0;
        if (!known) {
            char *names = declared_names(wf);
            if (err && asprintf(err, "workflow %s has no parameter '%s' (it declares: %s)", wf->name, k, names) < 0)
                *err = NULL;
            free(names);
            return -1;
        }
    }
    for (size_t i = 0; i < wf->n_params; i++) {
        const wf_param *p = &wf->params[i];
        if (json_object_get(params, p->name) != NULL) continue;
        if (p->required) {
            if (err && asprintf(err, "missing required parameter '%s' of workflow %s%s%s", p->name, wf->name,
                                p->description ? ": " : "", p->description ? p->description : "") < 0)
                *err = NULL;
            return -1;
        }
        if (p->def) json_object_set(params, p->name, p->def);
    }
    return 0;
}

static void load_function(loader *ld, wf_step *s, json_t *v)
{
    if (v == NULL || json_is_null(v)) return;
    if (is_fn(v)) {
        s->has_fn = 1;
        return;
    }
    if (!json_is_string(v)) {
        problem(ld, step_line(ld, s, PATH("function")), "step '%s': function must be a function or the name of one, not a %s", s->name,
                type_name(v));
        return;
    }
    s->fn_name = strdup(json_string_value(v));
    s->has_fn = 1;
    if (lh_ref_global(ld->vm, s->fn_name, NULL) == 0)
        problem(ld, step_line(ld, s, PATH("function")), "step '%s': function '%s' is not defined in the script", s->name,
                s->fn_name);
}

/* Clamps a script's attempt count into int range before the 1..100 check (a plain cast wrapped 2^32+1 to 1). */
static int attempts_of(json_int_t v) { return v < 1 ? 0 : v > 100 ? 101 : (int)v; }

const char *wf_fail_class_name(int cls)
{
    static const char *const names[WF_FAIL_COUNT] = {NULL, "job_failed", "timeout", "rejected", "error"};
    return cls > 0 && cls < WF_FAIL_COUNT ? names[cls] : NULL;
}

/* retry.on: a list of failure class names (or one name). */
static unsigned retry_classes(loader *ld, const wf_step *s, json_t *on)
{
    unsigned bits = 0;
    json_t *list = json_is_string(on) ? json_pack("[O]", on) : json_incref(on);
    if (!json_is_array(list) || json_array_size(list) == 0) {
        problem(ld, step_line(ld, s, PATH("retry", "on")),
                "step '%s': retry.on must list failure classes (job_failed, timeout, rejected, error)", s->name);
        json_decref(list);
        return WF_RETRY_ON_DEFAULT;
    }
    size_t i;
    json_t *x;
    json_array_foreach(list, i, x) {
        int cls = 0;
        for (int c = 1; c < WF_FAIL_COUNT && cls == 0; c++)
            if (json_is_string(x) && strcmp(json_string_value(x), wf_fail_class_name(c)) == 0) cls = c;
        if (cls == 0)
            problem(ld, step_line(ld, s, PATH("retry", "on")),
                    "step '%s': retry.on: '%s' is not a failure class (job_failed, timeout, rejected, error)", s->name, json_is_string(x) ? json_string_value(x) : type_name(x));
        else
            bits |= 1u << cls;
    }
    json_decref(list);
    return bits;
}

/* The line of a field of the step being loaded. */
#define FL(key) step_line(ld, s, PATH(key))

static void load_step(loader *ld, wf_step *s, const char *name, json_t *v)
{
    s->name = strdup(name);
    s->label = label_of(name);
    step_table(ld, name, &s->line);
    s->retry_attempts = 1;
    s->retry_backoff = 30;
    s->retry_max_backoff = 600;
    s->retry_on = WF_RETRY_ON_DEFAULT;
    if (!json_is_object(v) || is_fn(v)) {
        problem(ld, s->line, "step '%s' must be a table, not a %s", name, type_name(v));
        return;
    }
    char what[300];
    snprintf(what, sizeof what, "step '%s': field", name);
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        if (!in_list(k, step_keys)) problem(ld, FL(k), "step '%s': unknown field '%s'", name, k);
    }
    s->job_name = opt_string(ld, FL("job_name"), v, "job_name", what);
    s->template = opt_string(ld, FL("template"), v, "template", what);
    char *classic = opt_string(ld, FL("classic_template"), v, "classic_template", what);
    s->project = opt_string(ld, FL("project"), v, "project", what);
    s->region = opt_string(ld, FL("region"), v, "region", what);
    s->on_failure = opt_string(ld, FL("on_failure"), v, "on_failure", what);
    if (s->on_failure != NULL && strcmp(s->on_failure, "stop") == 0) {
        free(s->on_failure);
        s->on_failure = NULL;
    }
    if (s->template && classic) {
        problem(ld, s->line, "step '%s': give either template (Flex) or classic_template, not both", name);
        free(classic);
    } else if (classic) {
        s->template = classic;
        s->kind = WF_STEP_CLASSIC;
    } else if (s->template) {
        s->kind = WF_STEP_FLEX;
    } else {
        s->kind = WF_STEP_HOOK;
    }
    char gerr[200];
    if (s->template != NULL && strncmp(s->template, "gs://", 5) != 0)
        problem(ld, FL(s->kind == WF_STEP_CLASSIC ? "classic_template" : "template"),
                "step '%s': template '%s' must be a gs:// path", name, s->template);
    else if (s->template != NULL && wf_gcs_path_check(s->template, gerr, sizeof gerr) != 0)
        problem(ld, FL(s->kind == WF_STEP_CLASSIC ? "classic_template" : "template"), "step '%s': template '%s': %s",
                name, s->template, gerr);

    if (s->job_name == NULL) {
        if (s->kind != WF_STEP_HOOK) problem(ld, s->line, "step '%s': job_name is required", name);
    } else if (!wf_job_name_valid(s->job_name)) {
        problem(ld, FL("job_name"),
                "step '%s': job_name '%s' breaks Dataflow's rule [a-z]([-a-z0-9]*[a-z0-9])?", name, s->job_name);
    } else if (strstr(s->job_name, WF_SUFFIX_SEP) != NULL) {
        problem(ld, FL("job_name"), "step '%s': job_name '%s' must not contain '--' (it separates the run suffix)", name,
                s->job_name);
    } else if (strlen(s->job_name) > WF_JOB_PREFIX_MAX) {
        problem(ld, FL("job_name"), "step '%s': job_name is longer than %d characters", name, WF_JOB_PREFIX_MAX);
    }
    load_function(ld, s, json_object_get(v, "function"));

    json_t *p = json_object_get(v, "parameters");
    if (p != NULL && !json_is_object(p) && !(json_is_array(p) && json_array_size(p) == 0))
        problem(ld, FL("parameters"), "step '%s': parameters must be a table, not a %s", name, type_name(p));
    else if (json_is_object(p))
        s->parameters = json_incref(p);
    json_t *env = json_object_get(v, "environment");
    if (env != NULL && !json_is_object(env))
        problem(ld, FL("environment"), "step '%s': environment must be a table, not a %s", name, type_name(env));
    else if (env != NULL)
        s->environment = json_incref(env);

    if (s->kind == WF_STEP_HOOK) {
        static const char *const launch_only[] = {"parameters", "environment", "retry", "timeout", "success",
                                                  "on_cancel", NULL};
        for (const char *const *lk = launch_only; *lk; lk++)
            if (json_object_get(v, *lk) != NULL)
                problem(ld, FL(*lk), "step '%s' has '%s' but no template: a launch step needs template or "
                        "classic_template", name, *lk);
    }

    json_t *next = json_object_get(v, "next");
    json_t *choices = json_object_get(v, "choices");
    if (next != NULL && is_fn(next)) {
        s->next_kind = WF_NEXT_CHOICE;
        s->next_ref = 0; /* bound when the workflow's VM is created */
        if (choices == NULL)
            problem(ld, FL("next"), "step '%s': next is a function, so list the steps it may return in 'choices'",
                    name);
        else
            s->next = string_list(ld, FL("choices"), choices, "choices", &s->n_next);
    } else if (next != NULL) {
        s->next_kind = WF_NEXT_STATIC;
        s->next = string_list(ld, FL("next"), next, "next", &s->n_next);
        if (choices != NULL) problem(ld, FL("choices"), "step '%s': 'choices' only goes with a next function", name);
    }
    /* A repeated successor would count its step as a predecessor twice: a join that waits for itself. */
    for (size_t i = 0; i < s->n_next; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->next[i], s->next[j]) == 0) {
                problem(ld, FL(s->next_kind == WF_NEXT_CHOICE ? "choices" : "next"), "step '%s': %s lists '%s' twice", name,
                        s->next_kind == WF_NEXT_CHOICE ? "choices" : "next", s->next[i]);
                break;
            }

    json_t *retry = json_object_get(v, "retry");
    if (json_is_integer(retry)) {
        s->retry_attempts = attempts_of(json_integer_value(retry));
    } else if (json_is_object(retry)) {
        json_object_foreach(retry, k, x) {
            if (!in_list(k, (const char *const[]){"attempts", "backoff", "max_backoff", "on", NULL}))
                problem(ld, step_line(ld, s, PATH("retry", k)), "step '%s': unknown retry field '%s'", name, k);
        }
        json_t *a = json_object_get(retry, "attempts");
        if (a != NULL && !json_is_integer(a))
            problem(ld, step_line(ld, s, PATH("retry", "attempts")), "step '%s': retry.attempts must be a whole number", name);
        else if (a != NULL)
            s->retry_attempts = attempts_of(json_integer_value(a));
        json_t *b = json_object_get(retry, "backoff");
        if (b != NULL && (s->retry_backoff = parse_duration(b)) < 0)
            problem(ld, step_line(ld, s, PATH("retry", "backoff")), "step '%s': retry.backoff must be a duration (30, \"30s\", \"5m\")", name);
        json_t *mb = json_object_get(retry, "max_backoff");
        if (mb != NULL && (s->retry_max_backoff = parse_duration(mb)) < 0)
            problem(ld, step_line(ld, s, PATH("retry", "max_backoff")), "step '%s': retry.max_backoff must be a duration", name);
        json_t *on = json_object_get(retry, "on");
        if (on != NULL) s->retry_on = retry_classes(ld, s, on);
    } else if (retry != NULL) {
        problem(ld, FL("retry"), "step '%s': retry must be a number of attempts or a table, not a %s", name,
                type_name(retry));
    }
    if (s->retry_attempts < 1 || s->retry_attempts > 100)
        problem(ld, step_line(ld, s, PATH("retry", "attempts")), "step '%s': retry.attempts must be between 1 and 100", name);

    json_t *timeout = json_object_get(v, "timeout");
    if (timeout != NULL && (s->timeout = parse_duration(timeout)) < 0)
        problem(ld, FL("timeout"), "step '%s': timeout must be a duration (3600, \"90m\", \"2h\")", name);

    json_t *success = json_object_get(v, "success");
    if (success != NULL) {
        s->success = string_list(ld, FL("success"), success, "success", &s->n_success);
        for (size_t i = 0; i < s->n_success; i++) {
            char norm[64];
            wf_state_name(s->success[i], norm, sizeof norm);
            if (!in_list(norm, known_states) || strcmp(norm, "JOB_STATE_FAILED") == 0)
                problem(ld, FL("success"), "step '%s': '%s' cannot count as success (use DONE, DRAINED, UPDATED, "
                        "CANCELLED or RUNNING)", name, s->success[i]);
            free(s->success[i]);
            s->success[i] = strdup(norm);
        }
    } else {
        s->success = malloc(sizeof *s->success);
        s->success[0] = strdup("JOB_STATE_DONE");
        s->n_success = 1;
    }
    char *on_cancel = opt_string(ld, FL("on_cancel"), v, "on_cancel", what);
    if (on_cancel != NULL) {
        if (strcmp(on_cancel, "drain") == 0)
            s->stop_mode = WF_STOP_DRAIN;
        else if (strcmp(on_cancel, "cancel") != 0)
            problem(ld, FL("on_cancel"), "step '%s': on_cancel must be \"cancel\" or \"drain\"", name);
        free(on_cancel);
    }
}

#undef FL

static int cmp_step(const void *a, const void *b)
{
    return strcmp(((const wf_step *)a)->name, ((const wf_step *)b)->name);
}

/* Every gs:// string of a table of environment fields or parameters (of step s, or the workflow's when s is NULL)
 * must name a bucket that can exist: Dataflow refuses a launch whose template or temp location cannot. */
static void check_gs_paths(loader *ld, const wf_step *s, json_t *table, const char *field)
{
    const char *k;
    json_t *v;
    char err[200];
    json_object_foreach(table, k, v) {
        if (!json_is_string(v) || wf_gcs_path_check(json_string_value(v), err, sizeof err) == 0) continue;
        if (s != NULL)
            problem(ld, step_line(ld, s, PATH(field, k)), "step '%s': %s.%s '%s': %s", s->name, field, k,
                    json_string_value(v), err);
        else
            problem(ld, wf_line(ld, PATH(field, k)), "%s.%s '%s': %s", field, k, json_string_value(v), err);
    }
}

static void check_labels(loader *ld, int line, json_t *labels, const char *where)
{
    char err[256];
    if (labels != NULL && wf_labels_check(labels, err, sizeof err) != 0) problem(ld, line, "%s: %s", where, err);
}

/* Depth-first from `root` over the edges whose target exists, reporting each edge that closes a cycle.
 * colour: 0 unseen, 1 on the stack, 2 done; stack and edge have room for every step. */
static void graph_walk(loader *ld, size_t root, int *colour, size_t *stack, size_t *edge)
{
    wf_workflow *wf = ld->wf;
    size_t sp = 0;
    stack[sp++] = root;
    colour[root] = 1;
    while (sp > 0) {
        size_t u = stack[sp - 1];
        wf_step *s = &wf->steps[u];
        size_t n_out = s->n_next + (s->on_failure ? 1 : 0);
        if (edge[u] < n_out) {
            size_t e = edge[u]++;
            const char *target = e < s->n_next ? s->next[e] : s->on_failure;
            int v = wf_step_index(wf, target);
            if (v < 0) continue; /* reported when the edges were resolved */
            if (colour[v] == 1) {
                const char *field = e >= s->n_next ? "on_failure" : s->next_kind == WF_NEXT_CHOICE ? "choices" : "next";
                problem(ld, step_line(ld, s, PATH(field)),
                        "cycle: step '%s' leads back to '%s' (a run launches each step once)", s->name, target);
            } else if (colour[v] == 0) {
                colour[v] = 1;
                stack[sp++] = (size_t)v;
            }
        } else {
            colour[u] = 2;
            sp--;
        }
    }
}

/* Edges to missing steps, reachability from the start (when it exists) and cycles anywhere, over next,
 * choices and on_failure edges. A missing target only removes its own edge from the later checks. */
static void check_graph(loader *ld, int start_known)
{
    wf_workflow *wf = ld->wf;
    size_t n = wf->n_steps;
    for (size_t i = 0; i < n; i++) {
        wf_step *s = &wf->steps[i];
        for (size_t j = 0; j < s->n_next; j++) {
            int t = wf_step_index(wf, s->next[j]);
            if (t < 0) {
                problem(ld, step_line(ld, s, PATH(s->next_kind == WF_NEXT_CHOICE ? "choices" : "next")),
                        "step '%s': next step '%s' does not exist", s->name, s->next[j]);
                continue;
            }
            wf_step *ts = &wf->steps[t];
            size_t *np = realloc(ts->preds, (ts->n_preds + 1) * sizeof *np);
            if (np == NULL) continue;
            ts->preds = np;
            ts->preds[ts->n_preds++] = i;
        }
        if (s->on_failure != NULL && wf_step_index(wf, s->on_failure) < 0)
            problem(ld, step_line(ld, s, PATH("on_failure")), "step '%s': on_failure step '%s' does not exist",
                    s->name, s->on_failure);
    }
    int *colour = calloc(n, sizeof *colour);
    size_t *stack = malloc((n + 1) * sizeof *stack), *edge = calloc(n, sizeof *edge);
    if (colour == NULL || stack == NULL || edge == NULL) goto done;
    if (start_known) {
        graph_walk(ld, wf->start_index, colour, stack, edge);
        for (size_t i = 0; i < n; i++)
            if (colour[i] == 0)
                problem(ld, wf->steps[i].line, "step '%s' is unreachable from start step '%s'", wf->steps[i].name,
                        wf->start);
    }
    /* cycles among the steps the start does not reach (or all of them, without a start) */
    for (size_t i = 0; i < n; i++)
        if (colour[i] == 0) graph_walk(ld, i, colour, stack, edge);
done:
    free(colour);
    free(stack);
    free(edge);
}

static void load_declaration(loader *ld, json_t *decl)
{
    wf_workflow *wf = ld->wf;
    const char *k;
    json_t *x;
    json_object_foreach(decl, k, x) {
        if (!in_list(k, workflow_keys)) problem(ld, wf_line(ld, PATH(k)), "unknown workflow field '%s'", k);
    }
    wf->name = opt_string(ld, wf_line(ld, PATH("name")), decl, "name", "workflow field");
    if (json_object_get(decl, "name") == NULL)
        problem(ld, decl_line(ld), "the workflow needs a name");
    else if (wf->name != NULL && (!wf_label_value_valid(wf->name) || wf->name[0] == '\0'))
        problem(ld, wf_line(ld, PATH("name")),
                "workflow name '%s' must be a valid label value: lowercase letters, digits, '_' and '-', at most 63",
                wf->name);
    wf->project = opt_string(ld, wf_line(ld, PATH("project")), decl, "project", "workflow field");
    wf->region = opt_string(ld, wf_line(ld, PATH("region")), decl, "region", "workflow field");
    wf->start = opt_string(ld, wf_line(ld, PATH("start")), decl, "start", "workflow field");
    json_t *env = json_object_get(decl, "environment");
    if (env != NULL && !json_is_object(env))
        problem(ld, wf_line(ld, PATH("environment")), "environment must be a table, not a %s", type_name(env));
    wf->environment = json_is_object(env) ? json_incref(env) : json_object();
    json_t *labels = json_object_get(decl, "labels");
    wf->labels = labels ? json_incref(labels) : json_object();
    check_labels(ld, wf_line(ld, PATH("labels")), wf->labels, "labels");
    check_gs_paths(ld, NULL, wf->environment, "environment");
    check_labels(ld, wf_line(ld, PATH("environment", "additionalUserLabels")),
                 json_object_get(wf->environment, "additionalUserLabels"), "environment.additionalUserLabels");
    char *orf = opt_string(ld, wf_line(ld, PATH("on_run_failure")), decl, "on_run_failure", "workflow field");
    if (orf != NULL) {
        if (strcmp(orf, "cancel") == 0)
            wf->cancel_on_failure = 1;
        else if (strcmp(orf, "leave") != 0)
            problem(ld, wf_line(ld, PATH("on_run_failure")), "on_run_failure must be \"leave\" or \"cancel\"");
        free(orf);
    }

    load_params(ld, json_object_get(decl, "params"));

    json_t *steps = json_object_get(decl, "steps");
    if (!json_is_object(steps) || json_object_size(steps) == 0) {
        problem(ld, wf_line(ld, PATH("steps")), "the workflow needs a non-empty 'steps' table");
        return;
    }
    wf->steps = calloc(json_object_size(steps), sizeof *wf->steps);
    json_object_foreach(steps, k, x) load_step(ld, &wf->steps[wf->n_steps++], k, x);
    qsort(wf->steps, wf->n_steps, sizeof *wf->steps, cmp_step);

    /* Without a (valid) start only reachability cannot be checked: every other rule still runs. */
    int si = -1;
    if (json_object_get(decl, "start") == NULL)
        problem(ld, wf_line(ld, PATH("steps")), "the workflow needs 'start', the name of its first step");
    else if (wf->start != NULL && (si = wf_step_index(wf, wf->start)) < 0)
        problem(ld, wf_line(ld, PATH("start")), "start step '%s' does not exist", wf->start);
    if (si >= 0) wf->start_index = (size_t)si;

    for (size_t i = 0; i < wf->n_steps; i++) {
        wf_step *s = &wf->steps[i];
        if (s->kind != WF_STEP_HOOK && s->region == NULL && wf->region == NULL)
            problem(ld, s->line, "step '%s': no region (set it on the workflow or the step)", s->name);
        check_labels(ld, step_line(ld, s, PATH("environment", "additionalUserLabels")),
                     json_object_get(s->environment, "additionalUserLabels"),
                     "environment.additionalUserLabels");
        check_gs_paths(ld, s, s->environment, "environment");
        check_gs_paths(ld, s, s->parameters, "parameters");
        /* A classic launch without environment.tempLocation is refused. Offline, the environment is known only
         * where it is static: the workflow's merged with the step's (a null there removes it). A step with a
         * function may still return one at run time, so only a step without a function is refused here; for the
         * others wf_build_launch checks the merged result before anything is sent. */
        if (s->kind == WF_STEP_CLASSIC && !s->has_fn) {
            json_t *tl = json_object_get(s->environment, "tempLocation");
            if (tl == NULL) tl = json_object_get(wf->environment, "tempLocation");
            if (tl == NULL || json_is_null(tl))
                problem(ld, step_line(ld, s, PATH("classic_template")),
                        "step '%s': a classic template needs environment.tempLocation (in the workflow's or the step's "
                        "environment, or returned by a parameter function)", s->name);
        }
        /* Each set may be within 64 and their union plus Sluice's three labels not: every launch would fail. */
        if (s->kind != WF_STEP_HOOK && json_is_object(wf->labels)) {
            json_t *all = json_copy(wf->labels);
            json_t *el = json_object_get(wf->environment, "additionalUserLabels");
            if (json_is_object(el)) json_object_update(all, el);
            el = json_object_get(s->environment, "additionalUserLabels");
            if (json_is_object(el)) json_object_update(all, el);
            json_object_set_new(all, WF_LABEL_WORKFLOW, json_null());
            json_object_set_new(all, WF_LABEL_RUN, json_null());
            json_object_set_new(all, WF_LABEL_STEP, json_null());
            if (json_object_size(all) > 64)
                problem(ld, s->line, "step '%s': its jobs would carry %zu labels with Sluice's own three: Dataflow "
                        "allows at most 64", s->name, json_object_size(all));
            json_decref(all);
        }
        for (size_t j = 0; j < i; j++) {
            wf_step *o = &wf->steps[j];
            if (s->job_name && o->job_name && strcmp(s->job_name, o->job_name) == 0)
                problem(ld, step_line(ld, s, PATH("job_name")), "steps '%s' and '%s' share job_name '%s' (finished jobs could not be told apart)",
                        o->name, s->name, s->job_name);
            if (strcmp(s->label, o->label) == 0)
                problem(ld, s->line, "steps '%s' and '%s' have the same label value '%s'", o->name, s->name, s->label);
        }
    }
    check_graph(ld, si >= 0);
}

/* The line of a "path:line: message" diagnostic; 0 for "path: message". */
static long diag_line(const char *item, size_t path_len)
{
    const char *p = item + path_len;
    if (*p != ':' || !isdigit((unsigned char)p[1])) return 0;
    return strtol(p + 1, NULL, 10);
}

typedef struct {
    long line;
    char *item;
} diag_key;

static int cmp_diag(const void *a, const void *b)
{
    const diag_key *x = a, *y = b;
    return x->line != y->line ? (x->line < y->line ? -1 : 1) : strcmp(x->item, y->item);
}

/* Orders one file's problems by line (then text). They are found in the order Lua hands out the table's keys,
 * which changes from run to run. */
static void sort_diags(wf_diags *d, size_t from, const char *path)
{
    if (d == NULL || d->n - from < 2) return;
    size_t n = d->n - from, plen = strlen(path);
    diag_key *keys = malloc(n * sizeof *keys);
    if (keys == NULL) return;
    for (size_t i = 0; i < n; i++) keys[i] = (diag_key){diag_line(d->items[from + i], plen), d->items[from + i]};
    qsort(keys, n, sizeof *keys, cmp_diag);
    for (size_t i = 0; i < n; i++) d->items[from + i] = keys[i].item;
    free(keys);
}

/* Loads and validates in `vm`. */
static wf_workflow *load_in(const char *path, const char *src, size_t len, lh_vm *vm, const lh_limits *limits,
                            wf_diags *diags)
{
    wf_workflow *wf = calloc(1, sizeof *wf);
    atomic_init(&wf->refs, 1);
    loader ld = {wf, diags, 0, vm, {0}};
    size_t first_diag = diags ? diags->n : 0;
    wf->path = strdup(path);
    wf->source = malloc(len + 1);
    memcpy(wf->source, src, len);
    wf->source[len] = '\0';
    wf->source_len = len;
    if (limits != NULL) wf->limits = *limits;
    char hash[65];
    util_sha256_hex(src, len, hash);
    wf->version = strdup(hash);
    char *err = NULL;
    json_t *decl = NULL;
    lh_status st = lh_load(vm, path, src, len, "dag", &decl, &err);
    if (st != LH_OK) {
        /* Lua's message already starts with "path:line:" */
        if (err != NULL && strncmp(err, path, strlen(path)) == 0)
            wf_diags_add(diags, "%s", err);
        else
            problem(&ld, 0, "%s: %s", lh_status_name(st), err ? err : "");
        free(err);
        wf_free(wf);
        return NULL;
    }
    src_index_build(&ld.src, wf->source);
    if (!json_is_object(decl))
        problem(&ld, decl_line(&ld), "the workflow table must have named fields (name, start, steps, ...)");
    else
        load_declaration(&ld, decl);
    json_decref(decl);
    src_index_free(&ld.src);
    sort_diags(diags, first_diag, path);
    if (ld.errors) {
        wf_free(wf);
        return NULL;
    }
    return wf;
}

wf_workflow *wf_load_source(const char *path, const char *src, size_t len, const lh_limits *limits,
                            wf_diags *diags)
{
    char *err = NULL;
    lh_vm *vm = lh_new(limits, &err);
    if (vm == NULL) {
        wf_diags_add(diags, "%s: %s", path, err ? err : "cannot create a Lua VM");
        free(err);
        return NULL;
    }
    wf_workflow *wf = load_in(path, src, len, vm, limits, diags);
    lh_free(vm);
    return wf;
}

static wf_workflow *load_file(const char *path, lh_vm *scratch, const lh_limits *limits, wf_diags *diags)
{
    size_t len = 0;
    char *src = util_read_file(path, 4u << 20, &len);
    if (src == NULL) {
        wf_diags_add(diags, "%s: cannot read: %s", path, strerror(errno));
        return NULL;
    }
    wf_workflow *wf = scratch ? load_in(path, src, len, scratch, limits, diags)
                              : wf_load_source(path, src, len, limits, diags);
    free(src);
    return wf;
}

wf_workflow *wf_load_file(const char *path, const lh_limits *limits, wf_diags *diags)
{
    return load_file(path, NULL, limits, diags);
}

wf_workflow *wf_load_file_in(const char *path, lh_vm *scratch, const lh_limits *limits, wf_diags *diags)
{
    return load_file(path, scratch, limits, diags);
}

/* The reference of a declared function value ({"$fn": ref}) or of a named global; 0 if neither. */
static int bind_fn(lh_vm *vm, json_t *v)
{
    if (is_fn(v)) return fn_ref(v);
    if (json_is_string(v)) return lh_ref_global(vm, json_string_value(v), NULL);
    return 0;
}

lh_vm *wf_vm(const wf_workflow *cwf, char **err)
{
    wf_workflow *wf = (wf_workflow *)cwf; /* the lazily created VM is cache state, not part of the model */
    if (wf->vm != NULL && lh_vm_dead(wf->vm)) { /* a budget kill abandoned it: build it again, as on first use */
        lh_free(wf->vm);
        wf->vm = NULL;
    }
    if (wf->vm != NULL) return wf->vm;
    lh_vm *vm = lh_new(&wf->limits, err);
    if (vm == NULL) return NULL;
    json_t *decl = NULL;
    if (lh_load(vm, wf->path, wf->source, wf->source_len, "dag", &decl, err) != LH_OK) {
        lh_free(vm);
        return NULL;
    }
    /* The same source declares the same steps; bind each step's functions to this VM. */
    json_t *steps = json_object_get(decl, "steps");
    int ok = 1;
    for (size_t i = 0; i < wf->n_steps && ok; i++) {
        wf_step *s = &wf->steps[i];
        json_t *d = json_object_get(steps, s->name);
        s->fn_ref = s->has_fn ? bind_fn(vm, json_object_get(d, "function")) : 0;
        s->next_ref = s->next_kind == WF_NEXT_CHOICE ? bind_fn(vm, json_object_get(d, "next")) : 0;
        ok = (!s->has_fn || s->fn_ref != 0) && (s->next_kind != WF_NEXT_CHOICE || s->next_ref != 0);
    }
    json_decref(decl);
    if (!ok) {
        if (err) *err = util_printf("%s: the script declared different functions when loaded again", wf->path);
        lh_free(vm);
        return NULL;
    }
    wf->vm = vm;
    return vm;
}

int wf_validate_set(wf_workflow *const *wfs, size_t n, wf_diags *diags)
{
    int found = 0;
    for (size_t a = 0; a < n; a++) {
        for (size_t b = a + 1; b < n; b++) {
            if (strcmp(wfs[a]->name, wfs[b]->name) == 0) {
                wf_diags_add(diags, "%s: workflow name '%s' is also used by %s", wfs[b]->path, wfs[b]->name,
                             wfs[a]->path);
                found++;
            }
            for (size_t i = 0; i < wfs[a]->n_steps; i++) {
                const wf_step *s = &wfs[a]->steps[i];
                if (s->kind == WF_STEP_HOOK) continue;
                const wf_step *o = wf_step_for_job(wfs[b], s->job_name);
                if (o == NULL) continue;
                wf_diags_add(diags, "%s:%d: job_name '%s' of step '%s' is also used by step '%s' of %s (%s:%d): "
                             "finished jobs could not be mapped to one workflow",
                             wfs[b]->path, o->line, s->job_name, o->name, s->name, wfs[a]->name, wfs[a]->path, s->line);
                found++;
            }
        }
    }
    return found;
}

/* ---- calling the script ---- */

static int map_status(lh_status st) { return st == LH_OK ? 0 : st == LH_TIMEOUT ? -2 : st == LH_NOMEM ? -3 : -1; }

/* Calls a function of the workflow: `which` is the step's parameter/hook function (0) or its choice (1). */
static int call_fn(const wf_workflow *wf, const wf_step *step, int which, json_t *ctx, json_t **out, char **err)
{
    lh_vm *vm = wf_vm(wf, err);
    if (vm == NULL) return -1;
    lh_status st = lh_call(vm, which ? step->next_ref : step->fn_ref, ctx, out, err);
    return map_status(st);
}

/* Converts a parameter value to the string Dataflow expects. */
static json_t *param_string(json_t *v)
{
    char buf[64];
    switch (json_typeof(v)) {
    case JSON_STRING: return json_incref(v);
    case JSON_INTEGER: snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); return json_string(buf);
    case JSON_REAL: snprintf(buf, sizeof buf, "%.17g", json_real_value(v)); return json_string(buf);
    case JSON_TRUE: return json_string("true");
    case JSON_FALSE: return json_string("false");
    default: return NULL;
    }
}

static int merge_params(json_t *into, json_t *from, const char *step, char **err)
{
    if (from == NULL) return 0;
    const char *k;
    json_t *v;
    json_object_foreach(from, k, v) {
        if (json_is_null(v)) {
            json_object_del(into, k);
            continue;
        }
        json_t *s = param_string(v);
        if (s == NULL) {
            if (asprintf(err, "step '%s': parameter '%s' must be a string, number or boolean", step, k) < 0) *err = NULL;
            return -4;
        }
        json_object_set_new(into, k, s);
    }
    return 0;
}

/* Merges launch environments: later keys win; additionalUserLabels merge key by key. */
static void merge_env(json_t *into, json_t *from)
{
    if (!json_is_object(from)) return;
    const char *k;
    json_t *v;
    json_object_foreach(from, k, v) {
        if (strcmp(k, "additionalUserLabels") == 0 && json_is_object(v)) {
            json_t *cur = json_object_get(into, k);
            if (!json_is_object(cur)) {
                cur = json_object();
                json_object_set_new(into, k, cur);
            }
            json_object_update(cur, v);
        } else if (json_is_null(v)) {
            json_object_del(into, k);
        } else {
            json_object_set(into, k, v);
        }
    }
}

int wf_build_launch(const wf_workflow *wf, const wf_step *step, json_t *ctx, const char *run_id,
                    const char *default_project, launch_req **out, char **err)
{
    *out = NULL;
    *err = NULL;
    int rc = 0;
    json_t *result = NULL, *params = json_object(), *env = json_object();
    const char *job_name = json_string_value(json_object_get(ctx, "job_name"));
    /* config_project's order: the step's, the workflow's, then the default (--project, SLUICE_PROJECT, the
     * credentials), which the caller resolved with the same function at start-up. */
    const char *project = step->project ? step->project : wf->project ? wf->project : default_project;
    const char *region = step->region ? step->region : wf->region;
    if (step->kind == WF_STEP_HOOK) {
        rc = -4;
        if (asprintf(err, "step '%s' has no template to launch", step->name) < 0) *err = NULL;
        goto done;
    }
    if (job_name == NULL || project == NULL || region == NULL) {
        rc = -4;
        if (asprintf(err, "step '%s': %s", step->name,
                     job_name == NULL  ? "the context has no job_name"
                     : project == NULL ? "no project: set project on the step or the workflow, pass --project, set "
                                         "SLUICE_PROJECT, or use credentials that name one (a service-account key's "
                                         "project_id, gcloud's quota_project_id, the metadata server)"
                                       : "no region") < 0)
            *err = NULL;
        goto done;
    }
    if ((rc = merge_params(params, step->parameters, step->name, err)) != 0) goto done;
    merge_env(env, wf->environment);
    merge_env(env, step->environment);
    if (step->has_fn) {
        if ((rc = call_fn(wf, step, 0, ctx, &result, err)) != 0) goto done;
        json_t *fp = result, *fe = NULL;
        if (json_is_object(result) && (json_is_object(json_object_get(result, "parameters")) ||
                                       json_is_object(json_object_get(result, "environment")))) {
            fp = json_object_get(result, "parameters");
            fe = json_object_get(result, "environment");
        }
        if (fp != NULL && !json_is_null(fp) && !json_is_object(fp) && !(json_is_array(fp) && json_array_size(fp) == 0)) {
            rc = -4;
            if (asprintf(err, "step '%s': function %s returned a %s; it must return a table of parameters",
                         step->name, step->fn_name ? step->fn_name : "", type_name(fp)) < 0)
                *err = NULL;
            goto done;
        }
        if (json_is_object(fp) && (rc = merge_params(params, fp, step->name, err)) != 0) goto done;
        merge_env(env, fe);
    }
    /* Labels: workflow labels, then the environment's, then ours, which identify the run and always win. */
    json_t *labels = json_deep_copy(wf->labels);
    json_object_update(labels, json_object_get(env, "additionalUserLabels"));
    json_object_set_new(labels, WF_LABEL_WORKFLOW, json_string(wf->name));
    json_object_set_new(labels, WF_LABEL_RUN, json_string(run_id));
    json_object_set_new(labels, WF_LABEL_STEP, json_string(step->label));
    json_object_set_new(env, "additionalUserLabels", labels);
    char lerr[256];
    if (wf_labels_check(labels, lerr, sizeof lerr) != 0) {
        rc = -4;
        if (asprintf(err, "step '%s': %s", step->name, lerr) < 0) *err = NULL;
        goto done;
    }
    if (step->kind == WF_STEP_CLASSIC && json_object_get(env, "tempLocation") == NULL) {
        rc = -4;
        if (asprintf(err, "step '%s': classic templates need environment.tempLocation", step->name) < 0) *err = NULL;
        goto done;
    }
    *out = launch_new(step->kind == WF_STEP_FLEX ? LAUNCH_FLEX : LAUNCH_CLASSIC, step->template, job_name, project,
                      region, params, env);
    if (*out == NULL) {
        rc = -4;
        if (asprintf(err, "step '%s': out of memory", step->name) < 0) *err = NULL;
    }
done:
    json_decref(result);
    json_decref(params);
    json_decref(env);
    return rc;
}

int wf_run_hook(const wf_workflow *wf, const wf_step *step, json_t *ctx, json_t **output, char **err)
{
    *err = NULL;
    if (!step->has_fn) {
        *output = json_null();
        return 0;
    }
    return call_fn(wf, step, 0, ctx, output, err);
}

int wf_successors(const wf_workflow *wf, const wf_step *step, json_t *ctx, json_t **names, char **err)
{
    *err = NULL;
    *names = json_array();
    if (step->next_kind == WF_NEXT_STATIC) {
        for (size_t i = 0; i < step->n_next; i++) json_array_append_new(*names, json_string(step->next[i]));
        return 0;
    }
    if (step->next_kind != WF_NEXT_CHOICE) return 0;
    json_t *r = NULL;
    int rc = call_fn(wf, step, 1, ctx, &r, err);
    if (rc != 0) { /* the choice function failed: no successors (the array was leaked here before) */
        json_decref(*names);
        *names = NULL;
        return rc;
    }
    if (json_is_string(r)) {
        json_array_append(*names, r);
    } else if (json_is_array(r)) {
        /* a name returned twice is one successor, launched once */
        size_t k, m;
        json_t *x, *y;
        json_array_foreach(r, k, x) {
            int seen = 0;
            json_array_foreach(*names, m, y) if (json_equal(x, y)) seen = 1;
            if (!seen) json_array_append(*names, x);
        }
    } else if (!json_is_null(r) && !(json_is_object(r) && json_object_size(r) == 0)) {
        if (asprintf(err, "step '%s': next() returned a %s; it must return a step name, a list of them, or nil",
                     step->name, type_name(r)) < 0)
            *err = NULL;
        rc = -4;
    }
    json_decref(r);
    size_t i;
    json_t *x;
    json_array_foreach(*names, i, x) {
        if (rc != 0) break;
        int ok = 0;
        for (size_t j = 0; json_is_string(x) && j < step->n_next; j++)
            if (strcmp(step->next[j], json_string_value(x)) == 0) ok = 1;
        if (!ok) {
            if (asprintf(err, "step '%s': next() returned %s%s%s, which is not one of its choices", step->name,
                         json_is_string(x) ? "'" : "a ", json_is_string(x) ? json_string_value(x) : type_name(x),
                         json_is_string(x) ? "'" : "") < 0)
                *err = NULL;
            rc = -4;
        }
    }
    if (rc != 0) {
        json_decref(*names);
        *names = NULL;
    }
    return rc;
}

/* ---- graphs ---- */

/* A step name as text inside a quoted DOT id/label or a Mermaid "..." label (caller frees). */
static char *graph_text(const char *name, int dot)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (f == NULL) return strdup("");
    for (const char *p = name; *p; p++) {
        if (dot && (*p == '"' || *p == '\\'))
            fprintf(f, "\\%c", *p);
        else if (dot && *p == '\n')
            fputs("\\n", f);
        else if (!dot && *p == '"')
            fputs("#quot;", f);
        else if (!dot && (*p == '<' || *p == '>'))
            fputs(*p == '<' ? "#lt;" : "#gt;", f);
        else
            fputc(*p, f);
    }
    fclose(f);
    return out;
}

static char *render(const wf_workflow *wf, int dot)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL) return NULL;
    char **esc = calloc(wf->n_steps + 1, sizeof *esc);
    for (size_t i = 0; i < wf->n_steps; i++) esc[i] = graph_text(wf->steps[i].name, dot);
    if (dot)
        fprintf(f, "digraph \"%s\" {\n  rankdir=TB;\n  node [fontname=\"Helvetica\"];\n", wf->name);
    else
        fprintf(f, "flowchart TD\n");
    for (size_t i = 0; i < wf->n_steps; i++) {
        const wf_step *s = &wf->steps[i];
        const char *what = s->kind == WF_STEP_HOOK ? "hook" : s->job_name;
        if (dot)
            fprintf(f, "  \"%s\" [label=\"%s\\n%s%s\", shape=%s];\n", esc[i], esc[i], what,
                    s->n_preds > 1 ? " (join)" : "", s->kind == WF_STEP_HOOK ? "ellipse" : "box");
        else if (s->kind == WF_STEP_HOOK)
            fprintf(f, "  s_%s([\"%s\"])\n", s->label, esc[i]);
        else
            fprintf(f, "  s_%s[\"%s<br/>%s%s\"]\n", s->label, esc[i], what, s->n_preds > 1 ? " (join)" : "");
    }
    for (size_t i = 0; i < wf->n_steps; i++) {
        const wf_step *s = &wf->steps[i];
        for (size_t j = 0; j < s->n_next; j++) {
            size_t ti = (size_t)wf_step_index(wf, s->next[j]);
            const wf_step *t = &wf->steps[ti];
            int choice = s->next_kind == WF_NEXT_CHOICE;
            if (dot)
                fprintf(f, "  \"%s\" -> \"%s\"%s;\n", esc[i], esc[ti], choice ? " [style=dashed, label=\"choice\"]" : "");
            else
                fprintf(f, "  s_%s %s s_%s\n", s->label, choice ? "-.->|choice|" : "-->", t->label);
        }
        if (s->on_failure != NULL) {
            size_t ti = (size_t)wf_step_index(wf, s->on_failure);
            const wf_step *t = &wf->steps[ti];
            if (dot)
                fprintf(f, "  \"%s\" -> \"%s\" [color=red, label=\"on failure\"];\n", esc[i], esc[ti]);
            else
                fprintf(f, "  s_%s -->|on failure| s_%s\n", s->label, t->label);
        }
    }
    if (dot) fprintf(f, "}\n");
    fclose(f);
    for (size_t i = 0; i < wf->n_steps; i++) free(esc[i]);
    free(esc);
    return buf;
}

char *wf_graph_mermaid(const wf_workflow *wf) { return render(wf, 0); }
char *wf_graph_dot(const wf_workflow *wf) { return render(wf, 1); }

/* ---- the context handed to functions ---- */

json_t *wf_assumed_result(const wf_step *step, const char *run_id)
{
    char name[WF_JOB_NAME_MAX + 1];
    if (step->kind == WF_STEP_HOOK) return json_pack("{s:s,s:n}", "state", "succeeded", "output");
    if (wf_launch_name(step, run_id, 1, name, sizeof name) == 0)
        return json_pack("{s:s,s:s}", "state", "JOB_STATE_DONE", "job_name", name);
    return json_pack("{s:s}", "state", "JOB_STATE_DONE");
}

json_t *wf_context(const wf_workflow *wf, const wf_step *step, const char *run_id, json_t *run_params,
                   int64_t started_ms, int attempt, json_t *jobs, json_t *results)
{
    char name[WF_JOB_NAME_MAX + 1] = "";
    if (step->job_name != NULL && wf_launch_name(step, run_id, attempt, name, sizeof name) != 0) return NULL;
    char when[40];
    util_rfc3339(started_ms, when, sizeof when);
    const char *project = step->project ? step->project : wf->project;
    const char *region = step->region ? step->region : wf->region;
    json_t *ctx = json_pack("{s:{s:s,s:s,s:s,s:o,s:I,s:s},s:{s:s,s:s?,s:s?,s:i},s:s?,s:s?,s:s?,s:s?}",
                            "run", "id", run_id, "workflow", wf->name, "version", wf->version, "params",
                            run_params ? json_incref(run_params) : json_object(), "started_at", (json_int_t)(started_ms / 1000),
                            "started", when, "step", "name", step->name, "job_name", step->job_name, "template",
                            step->template, "attempt", attempt, "job_name", name[0] ? name : NULL,
                            "template_location", step->template, "project", project, "region", region);
    if (ctx == NULL) return NULL;
    json_t *jl = jobs ? json_incref(jobs) : json_array();
    json_object_set_new(ctx, "jobs", jl);
    json_object_set(ctx, "job", json_array_size(jl) > 0 ? json_array_get(jl, 0) : json_null());
    json_object_set_new(ctx, "results", results ? json_incref(results) : json_object());
    return ctx;
}
