/* result: how Sluice's functions report failure — one rule per kind of call — and the codes its processes exit
 * with. mem.h holds the other half: running out of memory ends the process, so no caller checks an allocation.
 *
 * 1. A call whose callers act differently on different failures returns its module's result enum: 0 is success,
 *    each failure is a negative value with a comment in the header, and a static name where callers log or count
 *    them. store_rc (store.h, store_strerror), eng_rc (engine.h), lh_status (lua_host.h, lh_status_name), wf_rc
 *    (workflow.h: lua_host's outcomes plus an unusable result), oidc_status (oidc.h). A positive return is a
 *    documented success carrying a value (1 = "that run already existed", a count, an id).
 * 2. Any other call that can fail returns int 0 / -1, or NULL for a constructor or a look-up: its callers only
 *    need to know that it failed. Predicates return 1 / 0 and read as questions (`*_is_*`, `*_valid*`,
 *    `*_known`). A wrapper of a POSIX call that reports an errno returns it, as pthreads do (util_thread_realtime).
 * 3. An asynchronous call returns its operation id (> 0), or -1 and never runs its callback. What the operation
 *    came to arrives in the callback's result as an outcome enum whose 0 is success and whose other values say
 *    what the caller may do next: hc_error (http_client.h), df_err (dataflow.h), ja_outcome (jobs_api.h),
 *    ingress_outcome (ingress.h).
 * 4. A message for a person is an out-parameter set only on failure, and its type says who owns it:
 *    `const char **err` is a static string (never freed), `char **err` is the caller's to free.
 * 5. A process exits EXIT_OK, EXIT_RUNTIME (it ran and something failed: a run, a store, a server) or
 *    EXIT_USAGE (bad flags or input, told on stderr). `sluice serve` exits EXIT_OK on SIGTERM at any moment.
 * Uses: nothing. */
#ifndef SLUICE_RESULT_H
#define SLUICE_RESULT_H

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

#endif
