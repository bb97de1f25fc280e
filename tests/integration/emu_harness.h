/* emu_harness: starts `$SLUICE_BIN emulator` as a real process on 127.0.0.1 (ephemeral port, ready file,
 * credentials written to a temp dir), talks to its /emulator/ control endpoints, and stops it. Header-only.
 * Uses: testutil, http_client (blocking calls). */
#ifndef SLUICE_EMU_HARNESS_H
#define SLUICE_EMU_HARNESS_H
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "http_client.h"
#include "testutil.h"

typedef struct emu_proc {
    pid_t pid;
    char *dir;       /* temp dir: ready file, credentials, log */
    char base[128];  /* http://127.0.0.1:PORT */
    char sa_path[700], au_path[700];
    hc_client *hc;   /* for control calls */
} emu_proc;

static int emu_ready_cond(void *arg)
{
    emu_proc *e = arg;
    char path[600];
    snprintf(path, sizeof path, "%s/ready", e->dir);
    char *t = tu_read_file(path, NULL);
    if (t == NULL) return 0;
    char *nl = strchr(t, '\n');
    if (nl) *nl = '\0';
    snprintf(e->base, sizeof e->base, "%s", t);
    free(t);
    return e->base[0] != '\0';
}

/* Starts the emulator with extra arguments (NULL-terminated list, may be NULL). Returns 0 or -1. */
static __attribute__((unused)) int emu_start(emu_proc *e, const char *const *extra)
{
    memset(e, 0, sizeof *e);
    const char *bin = getenv("SLUICE_BIN");
    if (bin == NULL) return -1;
    e->dir = tu_tempdir();
    char ready[600], creds[600], logp[600];
    snprintf(ready, sizeof ready, "%s/ready", e->dir);
    snprintf(creds, sizeof creds, "%s/creds", e->dir);
    snprintf(logp, sizeof logp, "%s/emulator.log", e->dir);
    snprintf(e->sa_path, sizeof e->sa_path, "%s/service-account.json", creds);
    snprintf(e->au_path, sizeof e->au_path, "%s/authorized_user.json", creds);
    const char *argv[64] = {bin, "emulator", "--port", "0", "--ready-file", ready, "--write-credentials", creds};
    int n = 8;
    for (int i = 0; extra && extra[i] && n < 62; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    e->pid = fork();
    if (e->pid < 0) return -1;
    if (e->pid == 0) {
        int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        setenv("SLUICE_LOG_LEVEL", "warning", 1);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    if (!tu_poll(emu_ready_cond, e, 15000)) {
        kill(e->pid, SIGKILL);
        waitpid(e->pid, NULL, 0);
        e->pid = 0;
        return -1;
    }
    hc_options o = {.total_timeout_ms = 10000};
    e->hc = hc_new(&o);
    return 0;
}

static __attribute__((unused)) void emu_stop(emu_proc *e)
{
    if (e->pid > 0) {
        kill(e->pid, SIGTERM);
        int st;
        for (int i = 0; i < 500; i++) {
            if (waitpid(e->pid, &st, WNOHANG) == e->pid) {
                e->pid = 0;
                break;
            }
            usleep(10000);
        }
        if (e->pid > 0) {
            kill(e->pid, SIGKILL);
            waitpid(e->pid, NULL, 0);
        }
    }
    hc_free(e->hc);
    if (e->dir) tu_rmtree(e->dir);
    free(e->dir);
    memset(e, 0, sizeof *e);
}

/* GET or POST an /emulator/ path; returns the parsed JSON body (caller decrefs) or NULL. */
static __attribute__((unused)) json_t *emu_call(emu_proc *e, const char *method, const char *path, const char *body)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", e->base, path);
    static const char *const hdrs[] = {"Content-Type: application/json", NULL};
    hc_req rq = {.method = method, .url = url, .headers = hdrs, .body = body, .body_len = body ? strlen(body) : 0};
    hc_resp *r = NULL;
    const char *err = NULL;
    if (hc_perform_sync(e->hc, &rq, &r, &err) != 0) return NULL;
    json_t *j = (r->error == HC_OK && r->status == 200) ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
    if (j == NULL) fprintf(stderr, "emu_call %s %s: %s %ld %s\n", method, path, hc_error_name(r->error), r->status, r->body);
    hc_resp_free(r);
    return j;
}

/* POST /emulator/config with a JSON text; returns 0 or -1. */
static __attribute__((unused)) int emu_config(emu_proc *e, const char *json)
{
    json_t *j = emu_call(e, "POST", "/emulator/config", json);
    json_decref(j);
    return j ? 0 : -1;
}

static __attribute__((unused)) int emu_reset(emu_proc *e)
{
    json_t *j = emu_call(e, "POST", "/emulator/reset", "{}");
    json_decref(j);
    return j ? 0 : -1;
}

/* stats[group][key] (or stats[group][key][sub] when sub != NULL) as an integer; 0 when absent. */
static __attribute__((unused)) long emu_stat(emu_proc *e, const char *group, const char *key, const char *sub)
{
    json_t *s = emu_call(e, "GET", "/emulator/stats", NULL);
    json_t *v = json_object_get(json_object_get(s, group), key);
    if (sub) v = json_object_get(v, sub);
    long n = json_is_integer(v) ? (long)json_integer_value(v) : 0;
    json_decref(s);
    return n;
}

#endif
