/* wfset: workflows loaded together from files and directories.
 * Uses: workflow, libc (stat, readdir). Must not: print or exit. */
#include "wfset.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void add_file(wf_set *set, char *path)
{
    char **files = path ? realloc(set->files, (set->n_files + 1) * sizeof *files) : NULL;
    if (files == NULL) {
        free(path);
        return;
    }
    set->files = files;
    set->files[set->n_files++] = path;
}

/* Appends PATH, or every *.lua directly inside a directory (sorted), to set->files. */
static void collect(wf_set *set, const char *path, wf_diags *d)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        wf_diags_add(d, "%s: %s", path, strerror(errno));
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        add_file(set, strdup(path));
        return;
    }
    DIR *dir = opendir(path);
    if (dir == NULL) {
        wf_diags_add(d, "%s: %s", path, strerror(errno));
        return;
    }
    size_t first = set->n_files;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".lua") != 0 || e->d_name[0] == '.') continue;
        char *file = NULL;
        if (asprintf(&file, "%s%s%s", path, path[strlen(path) - 1] == '/' ? "" : "/", e->d_name) < 0) file = NULL;
        add_file(set, file);
    }
    closedir(dir);
    if (set->n_files == first) wf_diags_add(d, "%s: no *.lua workflow files in this directory", path);
    if (set->n_files - first > 1) qsort(set->files + first, set->n_files - first, sizeof *set->files, cmp_str);
}

void wf_set_load(wf_set *set, char *const *paths, size_t n_paths, wf_diags *d)
{
    memset(set, 0, sizeof *set);
    for (size_t i = 0; i < n_paths; i++) collect(set, paths[i], d);
    set->wfs = calloc(set->n_files + 1, sizeof *set->wfs);
    if (set->wfs == NULL) return;
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
