/* wf_source: the scan of a workflow script's source that places problems at file:line.
 * Uses: libc. Must not: run Lua or know the model's rules.
 *
 * Lua keeps no line numbers for table constructors, so problems are placed by scanning the source once: every
 * `key =` and `["key"] =` field of every table constructor, the table it is in and the table its value opens.
 * Strings and comments are skipped, so text inside them never matches, and several fields on one line each get
 * that line. A declaration built by code (loops, tables assigned elsewhere) leaves gaps; the lookups below
 * then fall back to the nearest enclosing thing that is known: a field to its step, a step to the steps table,
 * that to the workflow's table. */
#include "wf_source.h"
#include "mem.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

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
    src_field *f = xrealloc(ix->fields, (ix->n_fields + 1) * sizeof *f);
    ix->fields = f;
    ix->fields[ix->n_fields++] = (src_field){xstrndup(key, len), line, table, -1};
}

int src_field_in(const src_index *ix, int table, const char *key)
{
    if (table < 0) return -1;
    for (size_t i = 0; i < ix->n_fields; i++)
        if (ix->fields[i].table == table && strcmp(ix->fields[i].key, key) == 0) return (int)i;
    return -1;
}

void src_index_build(src_index *ix, const char *src)
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
            src_table *t = xrealloc(ix->tables, (ix->n_tables + 1) * sizeof *t);
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

void src_index_free(src_index *ix)
{
    for (size_t i = 0; i < ix->n_fields; i++) free(ix->fields[i].key);
    free(ix->fields);
    free(ix->tables);
    memset(ix, 0, sizeof *ix);
}

/* The line of the field reached by following `path` (NULL-terminated keys) from `table`; when the path breaks
 * off, the line of the last field found, else `fallback`. */
int src_path_line(const src_index *ix, int table, int fallback, const char *const *path)
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

