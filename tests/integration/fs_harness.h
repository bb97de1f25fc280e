/* fs_harness: Google's Firestore emulator for tests (`gcloud emulators firestore start`, from the Google Cloud CLI),
 * started once per test executable on a free 127.0.0.1 port in a process group of its own, waited for (its "/"
 * answers "Ok"), named to the code under test through $FIRESTORE_EMULATOR_HOST, and stopped with its whole group
 * (gcloud runs the emulator as a Java child that outlives a kill of gcloud alone) by fs_harness_stop or at exit.
 * Each test gets a store of its own: a new project id on the one emulator (fs_harness_new_url), so tests never see
 * each other's documents. Missing gcloud is reported, not hidden: fs_harness_unavailable says whether to skip
 * (a developer's machine without the Google Cloud CLI) or fail ($CI=true).
 * Header-only (static inline): each tests/integration/test_*.c is its own executable. */
#ifndef SLUICE_FS_HARNESS_H
#define SLUICE_FS_HARNESS_H
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testproc.h"
#include "testutil.h"

typedef struct {
    pid_t pid;      /* gcloud, leader of its own process group; 0 when not running */
    int port;
    int urls;       /* projects handed out so far */
    char log[512];  /* the emulator's output */
    char err[2048]; /* why fs_harness_start failed */
} fs_harness;

static fs_harness *fs_harness_running; /* for the exit handler: the group to stop if a test aborts */

static inline void fs_harness_stop(fs_harness *h)
{
    if (h->pid > 0) {
        kill(-h->pid, SIGTERM);
        int st = 0;
        for (int i = 0; i < 500 && waitpid(h->pid, &st, WNOHANG) == 0; i++) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        kill(-h->pid, SIGKILL); /* the Java child, whatever gcloud did */
        waitpid(h->pid, &st, WNOHANG);
        h->pid = 0;
        if (h->log[0]) unlink(h->log);
    }
    if (fs_harness_running == h) fs_harness_running = NULL;
}

static inline void fs_harness_atexit(void)
{
    if (fs_harness_running) fs_harness_stop(fs_harness_running);
}

static inline int64_t fs_harness_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int fs_harness_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

/* 1 when "/" of the emulator answers "Ok". */
static inline int fs_harness_ready(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = 0;
    struct timeval tv = {2, 0};
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        const char req[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        char buf[512] = "";
        size_t got = 0;
        if (write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1)) {
            ssize_t n;
            while (got < sizeof buf - 1 && (n = read(fd, buf + got, sizeof buf - 1 - got)) > 0) {
                got += (size_t)n;
                buf[got] = '\0';
                if (strstr(buf, "Ok")) break;
            }
        }
        buf[got] = '\0';
        ok = strstr(buf, " 200 ") != NULL && strstr(buf, "Ok") != NULL;
    }
    if (fd >= 0) close(fd);
    return ok;
}

/* Starts the emulator and sets $FIRESTORE_EMULATOR_HOST. Returns 0, or -1 with the reason in h->err (gcloud
 * missing, or the emulator not answering within 90 s x $SLUICE_TEST_TIMEOUT_MULTIPLIER, with its log's tail). */
static inline int fs_harness_start(fs_harness *h)
{
    memset(h, 0, sizeof *h);
    char *out = NULL, *errs = NULL;
    char *const probe[] = {"sh", "-c", "command -v gcloud", NULL};
    int st = tu_run(probe, &out, &errs);
    free(out);
    free(errs);
    if (st != 0) {
        snprintf(h->err, sizeof h->err, "gcloud is not installed: the Firestore emulator comes with the Google Cloud CLI"
                 " (gcloud components install cloud-firestore-emulator)");
        return -1;
    }
    h->port = fs_harness_free_port();
    snprintf(h->log, sizeof h->log, "/tmp/sluice-fs-emulator-%d-%d.log", (int)getpid(), h->port);
    char hp[64];
    snprintf(hp, sizeof hp, "127.0.0.1:%d", h->port);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        int fd = open(h->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execlp("gcloud", "gcloud", "emulators", "firestore", "start", "--host-port", hp, "--quiet", (char *)NULL);
        _exit(127);
    }
    if (pid < 0) {
        snprintf(h->err, sizeof h->err, "fork: %s", strerror(errno));
        return -1;
    }
    setpgid(pid, pid);
    h->pid = pid;
    fs_harness_running = h;
    atexit(fs_harness_atexit);
    int64_t deadline = fs_harness_now_ms() + tu_timeout_ms(90000);
    while (!fs_harness_ready(h->port)) {
        int ws;
        if (waitpid(pid, &ws, WNOHANG) == pid || fs_harness_now_ms() > deadline) {
            size_t len = 0;
            char *log = tu_read_file(h->log, &len);
            snprintf(h->err, sizeof h->err, "the Firestore emulator did not start on %s:\n%s", hp,
                     log ? (len > 1500 ? log + len - 1500 : log) : "(no log)");
            free(log);
            if (waitpid(pid, &ws, WNOHANG) == pid) h->pid = 0;
            fs_harness_stop(h);
            return -1;
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    setenv("FIRESTORE_EMULATOR_HOST", hp, 1);
    return 0;
}

/* A store of its own on the running emulator: "firestore://sluice-test-PID-N". Caller frees. */
static inline char *fs_harness_new_url(fs_harness *h)
{
    char *u = NULL;
    if (asprintf(&u, "firestore://sluice-test-%d-%d", (int)getpid(), ++h->urls) < 0) return NULL;
    return u;
}

/* Writes `fields_json` (Firestore's typed fields, e.g. {"version":{"integerValue":"99"}}) as the document `path`
 * ("meta/schema") of the store `url` (firestore://PROJECT), behind the store's back, with curl. Returns curl's exit
 * status (0 on success). */
static inline int fs_harness_put_doc(fs_harness *h, const char *url, const char *path, const char *fields_json)
{
    char api[512], body[1024];
    snprintf(api, sizeof api, "http://127.0.0.1:%d/v1/projects/%s/databases/(default)/documents/%s", h->port,
             url + strlen("firestore://"), path);
    snprintf(body, sizeof body, "{\"fields\":%s}", fields_json);
    char *const argv[] = {"curl", "-sf", "-o", "/dev/null", "-X", "PATCH", "-H", "Content-Type: application/json",
                          "-H", "Authorization: Bearer owner", "--data", body, api, NULL};
    char *out = NULL, *errs = NULL;
    int st = tu_run(argv, &out, &errs);
    free(out);
    free(errs);
    return st;
}

/* Whether a test without the emulator skips (0) or fails (1): under $CI=true a missing emulator is a failure. */
static inline int fs_harness_must_run(void)
{
    const char *ci = getenv("CI");
    return ci != NULL && strcmp(ci, "true") == 0;
}

#endif
