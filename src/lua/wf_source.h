/* wf_source: where things are declared in a workflow script — a light scan of the Lua source that the loader
 * uses to put file:line on every problem (Lua keeps no line numbers for table constructors).
 * Uses: libc. Must not: run Lua or know the workflow model's rules; private to the loader (wf_load.c, wf_check.c). */
#ifndef SLUICE_WF_SOURCE_H
#define SLUICE_WF_SOURCE_H
#include <stddef.h>


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


/* Scans `src` once. Caller frees with src_index_free. */
void src_index_build(src_index *ix, const char *src);
void src_index_free(src_index *ix);
/* The field `key` directly in constructor `table`, or -1. */
int src_field_in(const src_index *ix, int table, const char *key);
/* The line of the field reached by following `path` (NULL-terminated keys) from `table`; when the path breaks
 * off, the line of the last field found, else `fallback`. */
int src_path_line(const src_index *ix, int table, int fallback, const char *const *path);

#endif
