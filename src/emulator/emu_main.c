/* emu_main: owns the life of a `sluice emulator` process: flags into options, configuration into the instance,
 * process setup (signals, file limit, libcurl), starting the timer and delivery threads and the HTTP server,
 * announcing the address (stdout, ready file, credential files), waiting for SIGTERM/SIGINT, and stopping in
 * the order that leaves no request parked. Uses: emu.h, emulator.h, log, libcurl. Must not: handle requests. */
#include "emulator.h"

#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "emu.h"
#include "log.h"

/* What emu_start started, so that emu_stop undoes exactly that. */
struct emu_run {
    pthread_t timer_tid, delivery_tid;
    int timer_started, delivery_started, curl_ready;
};

/* Signals are taken synchronously by the main thread (sigwait on *sigs); every thread started afterwards
 * inherits the mask. Also: no SIGPIPE from closed connections, room for the connection limit, libcurl. */
static void emu_process_setup(sigset_t *sigs)
{
    sigemptyset(sigs);
    sigaddset(sigs, SIGTERM);
    sigaddset(sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096 && rl.rlim_max > rl.rlim_cur) {
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Brings the emulator up as `o` says and announces it. Returns 0, or -1 after saying why on stderr (whatever
 * was started is recorded in *run for emu_stop). */
static int emu_start(const struct emu_opts *o, struct emu_run *run, sigset_t *sigs)
{
    char err[512];
    json_t *doc = emu_cfg_load(o->config_path, o->flags);
    if (doc == NULL) return -1;
    emu_state_init((uint64_t)o->seed);
    emu_g.start_cfg = json_deep_copy(doc);
    if (emu_apply_config(doc, err, sizeof err) != 0) {
        fprintf(stderr, "sluice emulator: bad config: %s\n", err);
        return -1;
    }
    if (emu_identity_init() != 0) {
        fprintf(stderr, "sluice emulator: cannot generate keys\n");
        return -1;
    }
    emu_process_setup(sigs);
    run->curl_ready = 1;
    if (pthread_create(&run->timer_tid, NULL, emu_timer_thread, NULL) != 0) return -1;
    run->timer_started = 1;
    if (pthread_create(&run->delivery_tid, NULL, emu_delivery_thread, NULL) != 0) return -1;
    run->delivery_started = 1;
    if (emu_http_start(&o->addr, (unsigned)o->threads) != 0) {
        fprintf(stderr, "sluice emulator: cannot listen on %s:%ld\n", o->host, o->port);
        return -1;
    }
    unsigned bound = emu_http_port();
    emu_identity_set_base(o->host, bound ? bound : (unsigned)o->port);
    if (o->creds_dir != NULL && emu_write_credentials(o->creds_dir) != 0) {
        fprintf(stderr, "sluice emulator: cannot write credentials to %s\n", o->creds_dir);
        return -1;
    }
    printf("{\"listening\":\"%s\"}\n", emu_g.base_url);
    fflush(stdout);
    if (o->ready_file != NULL) {
        char line[128];
        snprintf(line, sizeof line, "%s\n", emu_g.base_url);
        if (emu_write_atomic(o->ready_file, line, 0644) != 0) {
            fprintf(stderr, "sluice emulator: cannot write %s\n", o->ready_file);
            return -1;
        }
    }
    log_info("emulator listening on %s (seed %ld)", emu_g.base_url, o->seed);
    return 0;
}

/* Undoes what emu_start did: parked answers go out, the daemon stops, then the timer and delivery threads end
 * and the instance is freed. */
static void emu_stop(struct emu_run *run)
{
    emu_http_stop();
    if (run->timer_started) emu_timer_stop(run->timer_tid);
    if (run->delivery_started) emu_delivery_stop(run->delivery_tid);
    emu_state_free();
    if (run->curl_ready) curl_global_cleanup();
}

int emu_main(int argc, char **argv)
{
    struct emu_opts o;
    struct emu_run run;
    sigset_t sigs;
    int exit_code = 2;
    memset(&run, 0, sizeof run);
    int rc = emu_flags_parse(argc, argv, &o);
    if (rc == EMU_FLAGS_HELP) {
        exit_code = 0;
    } else if (rc == EMU_FLAGS_OK && emu_start(&o, &run, &sigs) == 0) {
        int sig = 0;
        sigwait(&sigs, &sig);
        log_info("emulator stopping on signal %d", sig);
        exit_code = 0;
    }
    emu_stop(&run);
    json_decref(o.flags);
    return exit_code;
}
