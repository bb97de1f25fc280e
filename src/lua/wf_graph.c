/* wf_graph: rendering a workflow's graph as Mermaid, DOT and JSON (see wf_graph.h).
 * Uses: workflow (the model), jansson. Must not: call Lua. */
#include "wf_graph.h"
#include "mem.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A step name as text inside a quoted DOT id/label or a Mermaid "..." label (caller frees). */
static char *graph_text(const char *name, int dot)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = util_memstream(&out, &len);
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

/* Every edge of the graph, the one place that knows them: static successors, the declared choices of a choice
 * function, and on_failure. Each renderer (mermaid, dot, the JSON the web UI draws) walks this. */
typedef enum { GRAPH_NEXT = 0, GRAPH_CHOICE, GRAPH_ON_FAILURE } graph_edge_kind;
static const char *const graph_edge_names[] = {"next", "choice", "on_failure"};
typedef void (*graph_edge_fn)(const wf_workflow *wf, size_t from, size_t to, graph_edge_kind kind, void *ud);

static void graph_edges(const wf_workflow *wf, graph_edge_fn fn, void *ud)
{
    for (size_t i = 0; i < wf->n_steps; i++) {
        const wf_step *s = &wf->steps[i];
        for (size_t j = 0; j < s->n_next; j++)
            fn(wf, i, (size_t)wf_step_index(wf, s->next[j]), s->next_kind == WF_NEXT_CHOICE ? GRAPH_CHOICE : GRAPH_NEXT,
               ud);
        if (s->on_failure != NULL) fn(wf, i, (size_t)wf_step_index(wf, s->on_failure), GRAPH_ON_FAILURE, ud);
    }
}

typedef struct {
    FILE *f;
    char **esc;
    int dot;
} render_ctx;

static void render_edge(const wf_workflow *wf, size_t i, size_t ti, graph_edge_kind kind, void *ud)
{
    render_ctx *c = ud;
    const wf_step *s = &wf->steps[i], *t = &wf->steps[ti];
    if (kind == GRAPH_ON_FAILURE) {
        if (c->dot)
            fprintf(c->f, "  \"%s\" -> \"%s\" [color=red, label=\"on failure\"];\n", c->esc[i], c->esc[ti]);
        else
            fprintf(c->f, "  s_%s -->|on failure| s_%s\n", s->label, t->label);
        return;
    }
    int choice = kind == GRAPH_CHOICE;
    if (c->dot)
        fprintf(c->f, "  \"%s\" -> \"%s\"%s;\n", c->esc[i], c->esc[ti], choice ? " [style=dashed, label=\"choice\"]" : "");
    else
        fprintf(c->f, "  s_%s %s s_%s\n", s->label, choice ? "-.->|choice|" : "-->", t->label);
}

static char *render(const wf_workflow *wf, int dot)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = util_memstream(&buf, &len);
    char **esc = xcalloc(wf->n_steps + 1, sizeof *esc);
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
    render_ctx c = {.f = f, .esc = esc, .dot = dot};
    graph_edges(wf, render_edge, &c);
    if (dot) fprintf(f, "}\n");
    fclose(f);
    for (size_t i = 0; i < wf->n_steps; i++) free(esc[i]);
    free(esc);
    return buf;
}

static void json_edge(const wf_workflow *wf, size_t i, size_t ti, graph_edge_kind kind, void *ud)
{
    json_array_append_new((json_t *)ud, json_pack("{s:s,s:s,s:s}", "from", wf->steps[i].name, "to", wf->steps[ti].name,
                                                  "kind", graph_edge_names[kind]));
}

json_t *wf_graph_json(const wf_workflow *wf)
{
    static const char *const kinds[] = {"hook", "flex", "classic"};
    json_t *nodes = json_array(), *edges = json_array();
    for (size_t i = 0; i < wf->n_steps; i++) {
        const wf_step *s = &wf->steps[i];
        json_array_append_new(nodes, json_pack("{s:s,s:s,s:s?,s:b,s:b,s:b,s:s?}", "id", s->name, "kind", kinds[s->kind],
                                               "job_name", s->job_name, "start", i == wf->start_index, "join",
                                               s->n_preds > 1, "choice", s->next_kind == WF_NEXT_CHOICE, "on_failure",
                                               s->on_failure));
    }
    graph_edges(wf, json_edge, edges);
    return json_pack("{s:o,s:o}", "nodes", nodes, "edges", edges);
}

char *wf_graph_mermaid(const wf_workflow *wf) { return render(wf, 0); }
char *wf_graph_dot(const wf_workflow *wf) { return render(wf, 1); }
