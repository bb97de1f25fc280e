/* bench_emu: starts `sluice emulator` for a benchmark (ephemeral port, ready file, credentials) and stops it.
 * Header-only; shared by the benchmarks. */
#ifndef SLUICE_BENCH_EMU_H
#define SLUICE_BENCH_EMU_H
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Starts the emulator with `extra` arguments (NULL-terminated, may be NULL). Its base URL goes to base; the
 * credentials are written under dir/creds. Returns the pid, or -1. */
static __attribute__((unused)) pid_t bench_emu_start(const char *bin, const char *dir, const char *const *extra, char *base, size_t cap)
{
    char ready[512], creds[512];
    snprintf(ready, sizeof ready, "%s/ready", dir);
    snprintf(creds, sizeof creds, "%s/creds", dir);
    const char *argv[48] = {bin, "emulator", "--port", "0", "--ready-file", ready, "--write-credentials", creds};
    int n = 8;
    for (int i = 0; extra && extra[i] && n < 46; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        setenv("SLUICE_LOG_LEVEL", "error", 1);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 1500; i++) {
        FILE *f = fopen(ready, "r");
        if (f) {
            if (fgets(base, (int)cap, f)) {
                base[strcspn(base, "\n")] = '\0';
                fclose(f);
                return pid;
            }
            fclose(f);
        }
        usleep(10000);
    }
    kill(pid, SIGKILL);
    return -1;
}

static __attribute__((unused)) void bench_emu_stop(pid_t pid)
{
    if (pid <= 0) return;
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

#endif
