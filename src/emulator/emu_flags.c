/* emu_flags: owns the command line of `sluice emulator`: the usage text, parsing flags into struct emu_opts, and
 * turning the flags that are configuration keys into a JSON document that overrides the config file.
 * Uses: emu.h, jansson. Must not: start anything or read files; emu_main acts on the result. */
#include "emu.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void emu_usage(FILE *f)
{
    fprintf(f,
            "usage: sluice emulator [--host 127.0.0.1] [--port N] [--config FILE.json] [--seed N]\n"
            "                       [--ready-file PATH] [--write-credentials DIR] [--threads N]\n"
            "                       [--project ID] [--project-number N] [--no-auth] [--token-lifetime S]\n"
            "                       [--latency-ms N] [--pending-ms N] [--running-ms N] [--lag-ms N]\n"
            "                       [--lag-mode not_found|stale] [--push-url URL] [--eventarc-url URL]\n"
            "                       [--max-body-bytes N] [--max-active-jobs N]\n"
            "See docs/emulator.md.\n");
}

/* The flags that only set a configuration key: the key's path in the config document (up to three levels) and
 * whether the value is a non-negative integer (otherwise a string). */
struct emu_flag_key {
    const char *flag;
    int is_int;
    const char *path[3];
};

static const struct emu_flag_key emu_flag_keys[] = {
    {"--project", 0, {"project_id"}},
    {"--project-number", 0, {"project_number"}},
    {"--token-lifetime", 1, {"token_lifetime_s"}},
    {"--max-body-bytes", 1, {"max_body_bytes"}},
    {"--latency-ms", 1, {"faults", "default", "latency_ms"}},
    {"--pending-ms", 1, {"job_defaults", "pending_ms"}},
    {"--running-ms", 1, {"job_defaults", "running_ms"}},
    {"--lag-ms", 1, {"lag", "window_ms"}},
    {"--lag-mode", 0, {"lag", "mode"}},
    {"--max-active-jobs", 1, {"quota", "max_active_jobs"}},
    {"--push-url", 0, {"events", "push_url"}},
    {"--eventarc-url", 0, {"events", "eventarc_url"}},
};

#define EMU_NFLAG_KEYS (sizeof emu_flag_keys / sizeof emu_flag_keys[0])

/* The index of flag `a` in emu_flag_keys, or EMU_NFLAG_KEYS. */
static size_t emu_flag_key_find(const char *a)
{
    size_t k = 0;
    while (k < EMU_NFLAG_KEYS && strcmp(a, emu_flag_keys[k].flag) != 0) k++;
    return k;
}

/* Sets flags[path[0]][path[1]]... to v (stolen), creating the objects on the way. */
static void emu_flag_set(json_t *flags, const char *const path[3], json_t *v)
{
    json_t *o = flags;
    int last = 0;
    while (last < 2 && path[last + 1] != NULL) last++;
    for (int i = 0; i < last; i++) {
        json_t *next = json_object_get(o, path[i]);
        if (next == NULL) json_object_set_new(o, path[i], next = json_object());
        o = next;
    }
    json_object_set_new(o, path[last], v);
}

static int emu_parse_int(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s || v < 0) return -1;
    *out = v;
    return 0;
}

/* The value of flag `a`; NULL after saying on stderr that it is missing. */
static const char *emu_flag_str(const char *a, const char *v)
{
    if (v == NULL) fprintf(stderr, "sluice emulator: %s needs a value\n", a);
    return v;
}

/* The non-negative integer value of flag `a` into *n: 0, or -1 after saying so on stderr. */
static int emu_flag_int(const char *a, const char *v, long *n)
{
    if (v != NULL && emu_parse_int(v, n) == 0) return 0;
    fprintf(stderr, "sluice emulator: %s needs a non-negative integer\n", a);
    return -1;
}

/* Fills *o from argv (o->flags is new and owned by o even on failure). Returns EMU_FLAGS_OK, EMU_FLAGS_HELP
 * (usage printed to stdout) or EMU_FLAGS_BAD (reason printed to stderr). */
int emu_flags_parse(int argc, char **argv, struct emu_opts *o)
{
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->threads = 2;
    o->seed = 1;
    o->flags = json_object();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **str = NULL;
        long *num = NULL, n = 0;
        size_t k = EMU_NFLAG_KEYS;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            emu_usage(stdout);
            return EMU_FLAGS_HELP;
        }
        if (strcmp(a, "--no-auth") == 0) {
            emu_flag_set(o->flags, (const char *const[3]){"auth"}, json_false());
            continue;
        }
        if (strcmp(a, "--host") == 0) str = &o->host;
        else if (strcmp(a, "--config") == 0) str = &o->config_path;
        else if (strcmp(a, "--ready-file") == 0) str = &o->ready_file;
        else if (strcmp(a, "--write-credentials") == 0) str = &o->creds_dir;
        else if (strcmp(a, "--port") == 0) num = &o->port;
        else if (strcmp(a, "--threads") == 0) num = &o->threads;
        else if (strcmp(a, "--seed") == 0) num = &o->seed;
        else k = emu_flag_key_find(a);
        if (str != NULL) {
            if ((*str = emu_flag_str(a, v)) == NULL) return EMU_FLAGS_BAD;
        } else if (num != NULL) {
            if (emu_flag_int(a, v, num) != 0) return EMU_FLAGS_BAD;
        } else if (k == EMU_NFLAG_KEYS) {
            fprintf(stderr, "sluice emulator: unknown argument %s\n", a);
            emu_usage(stderr);
            return EMU_FLAGS_BAD;
        } else if (emu_flag_keys[k].is_int) {
            if (emu_flag_int(a, v, &n) != 0) return EMU_FLAGS_BAD;
            emu_flag_set(o->flags, emu_flag_keys[k].path, json_integer(n));
        } else {
            if (emu_flag_str(a, v) == NULL) return EMU_FLAGS_BAD;
            emu_flag_set(o->flags, emu_flag_keys[k].path, json_string(v));
        }
        i++; /* every flag but --no-auth and --help takes a value */
    }
    o->threads = o->threads < 1 ? 1 : o->threads > 16 ? 16 : o->threads;
    o->addr.sin_family = AF_INET;
    o->addr.sin_port = htons((uint16_t)o->port);
    if (o->port > 65535 || inet_pton(AF_INET, o->host, &o->addr.sin_addr) != 1) {
        fprintf(stderr, "sluice emulator: bad --host/--port (IPv4 address and port expected)\n");
        return EMU_FLAGS_BAD;
    }
    return EMU_FLAGS_OK;
}
