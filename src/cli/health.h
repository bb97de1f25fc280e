/* health: `sluice health [URL]`: one GET of a running serve's /readyz (a container HEALTHCHECK, a systemd or
 * load-balancer probe) without needing curl in the image.
 * Uses: libcurl (one blocking request). Must not: know about the server's internals; it only reads the answer. */
#ifndef SLUICE_HEALTH_H
#define SLUICE_HEALTH_H

#define HEALTH_USAGE                                                                                           \
    "usage: sluice health [--timeout S] [URL]\n"                                                               \
    "GETs URL (default http://127.0.0.1:$PORT/readyz, PORT defaulting to 8080) and prints the answer.\n"       \
    "Exit status: 0 the answer was 200, 1 any other status or no answer within the timeout (default 3 s),\n"   \
    "2 usage.\n"

int health_main(int argc, char **argv);

#endif
