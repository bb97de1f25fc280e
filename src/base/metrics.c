/* metrics: process-wide Prometheus counters, gauges and histograms, and their text exposition.
 * Uses: libc, pthreads, util (UTF-8). Must not: know what is counted (callers name series) or do I/O.
 * Thread-safe: one mutex guards the table; an update is a hash look-up and an add. */
#include "metrics.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "util.h"

static const double BUCKETS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define N_BUCKETS (sizeof BUCKETS / sizeof BUCKETS[0])
#define N_SLOTS 512
#define MAX_FAMILIES 64

typedef struct series {
    struct series *next;     /* hash chain */
    struct series *fam_next; /* in declaration order of the family */
    const char *name;        /* the family's (static) */
    char *labels;            /* owned */
    double value;            /* counter / gauge; histogram: sum */
    uint64_t count;
    uint64_t buckets[N_BUCKETS];
} series;

typedef struct {
    const char *name, *help;
    metric_type type;
    series *first, *last;
} family;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static series *slots[N_SLOTS];
static family families[MAX_FAMILIES];
static size_t n_families;

static uint32_t hash2(const char *a, const char *b)
{
    uint32_t h = 2166136261u;
    for (; *a; a++) h = (h ^ (unsigned char)*a) * 16777619u;
    h = (h ^ '|') * 16777619u;
    for (; *b; b++) h = (h ^ (unsigned char)*b) * 16777619u;
    return h;
}

static family *find_family(const char *name)
{
    for (size_t i = 0; i < n_families; i++)
        if (strcmp(families[i].name, name) == 0) return &families[i];
    return NULL;
}

void metrics_declare(const char *name, metric_type type, const char *help)
{
    pthread_mutex_lock(&mu);
    if (find_family(name) == NULL && n_families < MAX_FAMILIES)
        families[n_families++] = (family){.name = name, .help = help, .type = type};
    pthread_mutex_unlock(&mu);
}

/* The series, created on first use; NULL when the family is undeclared or memory runs out. Under mu. */
static series *get_series(const char *name, const char *labels)
{
    if (labels == NULL) labels = "";
    uint32_t h = hash2(name, labels) % N_SLOTS;
    for (series *s = slots[h]; s; s = s->next)
        if (strcmp(s->name, name) == 0 && strcmp(s->labels, labels) == 0) return s;
    family *f = find_family(name);
    if (f == NULL) return NULL;
    series *s = xcalloc(1, sizeof *s);
    s->labels = xstrdup(labels);
    s->name = f->name;
    s->next = slots[h];
    slots[h] = s;
    if (f->last)
        f->last->fam_next = s;
    else
        f->first = s;
    f->last = s;
    return s;
}

char *metrics_escape(const char *value, char *out, size_t size)
{
    const unsigned char *p = (const unsigned char *)(value ? value : "");
    size_t n = strlen((const char *)p), o = 0;
    for (size_t i = 0; i < n;) {
        const char *piece;
        size_t len, adv;
        char one[2];
        if (p[i] == '\\' || p[i] == '"' || p[i] == '\n') {
            one[0] = '\\';
            one[1] = p[i] == '\n' ? 'n' : (char)p[i];
            piece = one;
            len = 2;
            adv = 1;
        } else if ((adv = util_utf8_seq(p + i, n - i)) > 0) {
            piece = (const char *)p + i;
            len = adv;
        } else {
            piece = "\xEF\xBF\xBD"; /* U+FFFD */
            len = 3;
            adv = 1;
        }
        if (o + len >= size) break;
        memcpy(out + o, piece, len);
        o += len;
        i += adv;
    }
    out[o] = '\0';
    return out;
}

void metrics_add(const char *name, const char *labels, double v)
{
    pthread_mutex_lock(&mu);
    series *s = get_series(name, labels);
    if (s) s->value += v;
    pthread_mutex_unlock(&mu);
}

void metrics_set(const char *name, const char *labels, double v)
{
    pthread_mutex_lock(&mu);
    series *s = get_series(name, labels);
    if (s) s->value = v;
    pthread_mutex_unlock(&mu);
}

void metrics_observe(const char *name, const char *labels, double seconds)
{
    pthread_mutex_lock(&mu);
    series *s = get_series(name, labels);
    if (s) {
        s->value += seconds;
        s->count++;
        for (size_t i = 0; i < N_BUCKETS; i++)
            if (seconds <= BUCKETS[i]) s->buckets[i]++;
    }
    pthread_mutex_unlock(&mu);
}

double metrics_get(const char *name, const char *labels)
{
    pthread_mutex_lock(&mu);
    double v = 0;
    uint32_t h = hash2(name, labels ? labels : "") % N_SLOTS;
    for (series *s = slots[h]; s; s = s->next)
        if (strcmp(s->name, name) == 0 && strcmp(s->labels, labels ? labels : "") == 0) v = s->value;
    pthread_mutex_unlock(&mu);
    return v;
}

char *metrics_render(size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = util_memstream(&buf, &n);
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < n_families; i++) {
        family *fa = &families[i];
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", fa->name, fa->help, fa->name, type_names[fa->type]);
        for (series *s = fa->first; s; s = s->fam_next) {
            const char *sep = s->labels[0] ? "," : "";
            if (fa->type != METRIC_HISTOGRAM) {
                fprintf(f, "%s%s%s%s %.17g\n", fa->name, s->labels[0] ? "{" : "", s->labels, s->labels[0] ? "}" : "",
                        s->value);
                continue;
            }
            for (size_t b = 0; b < N_BUCKETS; b++)
                fprintf(f, "%s_bucket{%s%sle=\"%g\"} %llu\n", fa->name, s->labels, sep, BUCKETS[b],
                        (unsigned long long)s->buckets[b]);
            fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", fa->name, s->labels, sep, (unsigned long long)s->count);
            fprintf(f, "%s_sum%s%s%s %.17g\n", fa->name, s->labels[0] ? "{" : "", s->labels, s->labels[0] ? "}" : "",
                    s->value);
            fprintf(f, "%s_count%s%s%s %llu\n", fa->name, s->labels[0] ? "{" : "", s->labels, s->labels[0] ? "}" : "",
                    (unsigned long long)s->count);
        }
    }
    pthread_mutex_unlock(&mu);
    fclose(f);
    if (len) *len = n;
    return buf;
}

void metrics_reset(void)
{
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < N_SLOTS; i++) {
        series *s = slots[i];
        while (s) {
            series *next = s->next;
            free(s->labels);
            free(s);
            s = next;
        }
        slots[i] = NULL;
    }
    n_families = 0;
    pthread_mutex_unlock(&mu);
}
