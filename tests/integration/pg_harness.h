/* pg_harness: a throwaway PostgreSQL server for tests, from Debian's own binaries (/usr/lib/postgresql/15/bin,
 * or $SLUICE_PG_BIN): initdb in a temp dir, then postgres listening only on a unix socket in that dir (no TCP,
 * so no port to collide on), and stopped, dir removed, by pg_harness_stop.
 * PostgreSQL refuses to run as root: as root (CI) the harness creates the OS user `sluice-test` if missing
 * (useradd) and runs initdb and postgres under it (setuid in the forked child); as any other user it runs them
 * as that user. The server dies with the test process (PR_SET_PDEATHSIG), so a crashed test leaves no server.
 * Durability is not what these tests measure, so the server runs with fsync=off (commits still wait for the
 * WAL write: synchronous_commit stays on); $SLUICE_PG_FSYNC=on turns fsync back on.
 * Each test gets its own schema (pg_harness_new_schema) in one database `sluice`, a connection string whose
 * search_path names it. Header-only (static inline) like store_fixture.h: each test is its own executable. */
#ifndef SLUICE_PG_HARNESS_H
#define SLUICE_PG_HARNESS_H
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testproc.h"
#include "testutil.h"

#define PG_HARNESS_USER "sluice-test"

typedef struct {
    char *dir;     /* data/, the socket and server.log; owned by the server's user */
    pid_t pid;     /* the postmaster, 0 when not running */
    uid_t uid;     /* the user the server runs as */
    gid_t gid;
    int drop;      /* 1: we are root and setuid to uid in the children */
    int schemas;   /* schemas handed out so far */
    char base[512]; /* "host=DIR port=5432 user=sluice" */
    char err[4096]; /* why pg_harness_start failed */
} pg_harness;

static inline const char *pg_harness_bindir(void)
{
    const char *b = getenv("SLUICE_PG_BIN");
    return b && *b ? b : "/usr/lib/postgresql/15/bin";
}

/* Appends the tail of `path` (a log file) to h->err, so a failure says what the server said. */
static inline void pg_harness_log_tail(pg_harness *h, const char *path)
{
    size_t len = 0;
    char *log = tu_read_file(path, &len);
    if (log == NULL) return;
    const char *tail = len > 1500 ? log + len - 1500 : log;
    size_t n = strlen(h->err);
    snprintf(h->err + n, sizeof h->err - n, "\n--- %s ---\n%s", path, tail);
    free(log);
}

/* Forks and execs argv[0] from the bin dir as the server's user, stdout+stderr to `log`. `keep`: the child is
 * long-lived (postgres) and dies with us. Returns the pid, or -1. */
static inline pid_t pg_harness_spawn(pg_harness *h, char *const argv[], const char *log, int keep)
{
    pid_t pid = fork();
    if (pid != 0) return pid;
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    if (h->drop && (setgroups(0, NULL) != 0 || setgid(h->gid) != 0 || setuid(h->uid) != 0)) {
        fprintf(stderr, "pg_harness: cannot become %s: %s\n", PG_HARNESS_USER, strerror(errno));
        _exit(126);
    }
    /* After setuid, which clears it; and checked, in case the parent died in between. */
    if (keep && (prctl(PR_SET_PDEATHSIG, SIGQUIT) != 0 || getppid() == 1)) _exit(125);
    if (chdir(h->dir) != 0) _exit(124);
    char exe[1024];
    snprintf(exe, sizeof exe, "%s/%s", pg_harness_bindir(), argv[0]);
    execv(exe, argv);
    fprintf(stderr, "pg_harness: cannot run %s: %s\n", exe, strerror(errno));
    _exit(127);
}

/* Finds (as root: creates) the user the server runs as. Returns 0 or -1 with h->err. */
static inline int pg_harness_user(pg_harness *h)
{
    if (geteuid() != 0) {
        h->drop = 0;
        h->uid = geteuid();
        h->gid = getegid();
        return 0;
    }
    struct passwd *pw = getpwnam(PG_HARNESS_USER);
    if (pw == NULL) {
        char *const argv[] = {"useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                              "/usr/sbin/nologin", PG_HARNESS_USER, NULL};
        char *out = NULL, *errs = NULL;
        int st = tu_run(argv, &out, &errs);
        pw = getpwnam(PG_HARNESS_USER);
        if (pw == NULL)
            snprintf(h->err, sizeof h->err, "PostgreSQL refuses to run as root and user '%s' could not be created"
                     " (useradd exit %d: %s)", PG_HARNESS_USER, st, errs ? errs : "");
        free(out);
        free(errs);
        if (pw == NULL) return -1;
    }
    h->drop = 1;
    h->uid = pw->pw_uid;
    h->gid = pw->pw_gid;
    return 0;
}

/* Runs one SQL text on a new connection to `conninfo`; returns the first column of the first row of the last
 * result, or the error message, as malloc'd text (NULL when there is neither). */
static inline char *pg_harness_query(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    char *out = NULL;
    if (PQstatus(c) != CONNECTION_OK) {
        out = strdup(PQerrorMessage(c));
    } else {
        PGresult *res = PQexec(c, sql);
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_TUPLES_OK && PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)) out = strdup(PQgetvalue(res, 0, 0));
        else if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) out = strdup(PQresultErrorMessage(res));
        PQclear(res);
    }
    PQfinish(c);
    return out;
}

/* Every row's first column of `sql`'s last result joined with "\n" (e.g. an EXPLAIN), or the error. Caller
 * frees. */
static inline char *pg_harness_query_rows(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    char *out = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&out, &len);
    if (PQstatus(c) != CONNECTION_OK) {
        fputs(PQerrorMessage(c), m);
    } else {
        PGresult *res = PQexec(c, sql);
        if (PQresultStatus(res) == PGRES_TUPLES_OK)
            for (int i = 0; i < PQntuples(res); i++) fprintf(m, "%s%s", i ? "\n" : "", PQgetvalue(res, i, 0));
        else fputs(PQresultErrorMessage(res), m);
        PQclear(res);
    }
    fclose(m);
    PQfinish(c);
    return out;
}

static inline void pg_harness_stop(pg_harness *h)
{
    if (h->pid > 0) {
        kill(h->pid, SIGINT); /* fast shutdown */
        int status = 0;
        for (int i = 0; i < 1000 && waitpid(h->pid, &status, WNOHANG) == 0; i++) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
            if (i == 500) kill(h->pid, SIGQUIT); /* immediate, after 5 s */
        }
        if (waitpid(h->pid, &status, WNOHANG) == 0) {
            kill(h->pid, SIGKILL);
            waitpid(h->pid, &status, 0);
        }
        h->pid = 0;
    }
    if (h->dir) tu_rmtree(h->dir);
    free(h->dir);
    h->dir = NULL;
}

/* Starts the server and creates database `sluice`. Returns 0, or -1 with the reason (and the tail of the
 * server's log) in h->err. Takes about a second (initdb is most of it). */
static inline int pg_harness_start(pg_harness *h)
{
    memset(h, 0, sizeof *h);
    char data[600], log[600], initlog[600];
    struct stat sb;
    char initdb[1024];
    snprintf(initdb, sizeof initdb, "%s/initdb", pg_harness_bindir());
    if (stat(initdb, &sb) != 0) {
        snprintf(h->err, sizeof h->err, "no PostgreSQL server binaries: %s is missing (apt-get install postgresql, or"
                 " set SLUICE_PG_BIN; scripts/deps.sh installs it)", initdb);
        return -1;
    }
    if (pg_harness_user(h) != 0) return -1;
    h->dir = tu_tempdir();
    if (h->dir == NULL || chown(h->dir, h->uid, h->gid) != 0 || chmod(h->dir, 0700) != 0) {
        snprintf(h->err, sizeof h->err, "cannot make a temp dir for the server: %s", strerror(errno));
        return -1;
    }
    snprintf(data, sizeof data, "%s/data", h->dir);
    snprintf(log, sizeof log, "%s/server.log", h->dir);
    snprintf(initlog, sizeof initlog, "%s/initdb.log", h->dir);
    char *const iargv[] = {"initdb", "-D", data, "-U", "sluice", "-A", "trust", "-E", "UTF8", "--locale=C",
                           "--no-sync", NULL};
    pid_t pid = pg_harness_spawn(h, iargv, initlog, 0);
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(h->err, sizeof h->err, "initdb failed (status %d)", status);
        pg_harness_log_tail(h, initlog);
        return -1;
    }
    const char *fsync_env = getenv("SLUICE_PG_FSYNC");
    char sockdir[620], fsync[32];
    snprintf(sockdir, sizeof sockdir, "unix_socket_directories=%s", h->dir);
    snprintf(fsync, sizeof fsync, "fsync=%s", fsync_env && strcmp(fsync_env, "on") == 0 ? "on" : "off");
    char *const pargv[] = {"postgres", "-D", data, "-p", "5432", "-c", "listen_addresses=", "-c", sockdir, "-c", fsync,
                           "-c", "max_connections=60", "-c", "shared_buffers=16MB", NULL};
    h->pid = pg_harness_spawn(h, pargv, log, 1);
    if (h->pid < 0) {
        h->pid = 0;
        snprintf(h->err, sizeof h->err, "fork: %s", strerror(errno));
        return -1;
    }
    snprintf(h->base, sizeof h->base, "host=%s port=5432 user=sluice", h->dir);
    char ping[700];
    snprintf(ping, sizeof ping, "%s dbname=postgres", h->base);
    int up = 0;
    for (int i = 0; i < 3000 && !up; i++) { /* 30 s */
        if (waitpid(h->pid, &status, WNOHANG) == h->pid) {
            h->pid = 0;
            snprintf(h->err, sizeof h->err, "postgres exited during start-up (status %d)", status);
            pg_harness_log_tail(h, log);
            return -1;
        }
        up = PQping(ping) == PQPING_OK;
        if (!up) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    if (!up) {
        snprintf(h->err, sizeof h->err, "postgres did not accept connections on %s within 30 s", h->dir);
        pg_harness_log_tail(h, log);
        return -1;
    }
    char *res = pg_harness_query(ping, "CREATE DATABASE sluice");
    if (res != NULL) {
        snprintf(h->err, sizeof h->err, "CREATE DATABASE sluice: %s", res);
        free(res);
        return -1;
    }
    return 0;
}

/* A conninfo for database `sluice` whose search_path is a new, empty schema (created here), so each test
 * starts from an empty store. Caller frees; NULL on failure. */
static inline char *pg_harness_new_schema(pg_harness *h)
{
    char name[32], sql[96], *conn = NULL;
    snprintf(name, sizeof name, "t%d_%d", (int)getpid(), ++h->schemas);
    snprintf(sql, sizeof sql, "CREATE SCHEMA %s", name);
    if (asprintf(&conn, "%s dbname=sluice", h->base) < 0) return NULL;
    char *res = pg_harness_query(conn, sql);
    free(conn);
    conn = NULL;
    if (res != NULL) {
        fprintf(stderr, "pg_harness: %s: %s\n", sql, res);
        free(res);
        return NULL;
    }
    if (asprintf(&conn, "%s dbname=sluice options='-csearch_path=%s'", h->base, name) < 0) return NULL;
    return conn;
}

#endif
