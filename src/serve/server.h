/* server: `sluice serve`: the long-running orchestrator. Pub/Sub push and Eventarc ingress (OIDC-authenticated,
 * durably recorded in the store inbox with group commit before the 2xx), the HTTP API over runs and workflows,
 * health and Prometheus metrics, and the engine in one dedicated thread.
 * Uses: http_server, oidc, metrics, events, store, engine, workflow, jobs_api, config, log, util.
 * Must not: call the engine from an HTTP thread (requests reach it through a command queue), or parse event
 * bodies itself (events does). See docs/api.md. */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

/* The `sluice serve` command. Returns the process exit status (0 clean stop, 1 runtime error, 2 usage). */
int server_main(int argc, char **argv);

#endif
