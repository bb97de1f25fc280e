/* health: `sluice health [URL]`: GET a serve's /readyz; exit 0 only on 200.
 * Uses: libcurl. Must not: touch the store or the workflows; a probe must not change anything. */
#include "health.h"

#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "result.h"

/* At most this much of the answer is kept for printing: a probe reads a small JSON document. */
#define HEALTH_MAX_BODY 4096

typedef struct {
    char data[HEALTH_MAX_BODY + 1];
    size_t len;
} health_buf;

static size_t health_sink(char *p, size_t sz, size_t n, void *ud)
{
    health_buf *b = ud;
    size_t len = sz * n, room = HEALTH_MAX_BODY - b->len;
    size_t take = len < room ? len : room;
    memcpy(b->data + b->len, p, take);
    b->len += take;
    b->data[b->len] = '\0';
    return len;
}

int health_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'}, {"timeout", required_argument, NULL, 't'}, {0, 0, 0, 0}};
    long timeout_s = 3;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            fputs(HEALTH_USAGE, stdout);
            return EXIT_OK;
        }
        char *end = NULL;
        if (c != 't' || (timeout_s = strtol(optarg, &end, 10)) < 1 || *end != '\0' || timeout_s > 600) {
            fputs("(see 'sluice health --help')\n", stderr);
            return EXIT_USAGE;
        }
    }
    if (argc - optind > 1) {
        fprintf(stderr, "sluice health: unexpected argument '%s'\n", argv[optind + 1]);
        return EXIT_USAGE;
    }
    char url[2048];
    if (optind < argc) {
        snprintf(url, sizeof url, "%s", argv[optind]);
    } else {
        const char *port = getenv("PORT");
        snprintf(url, sizeof url, "http://127.0.0.1:%s/readyz", port && *port ? port : "8080");
    }
    int rc = EXIT_RUNTIME;
    health_buf b = {.len = 0};
    b.data[0] = '\0';
    CURL *h = curl_easy_init();
    if (h == NULL) {
        fputs("sluice health: cannot initialise libcurl\n", stderr);
        return EXIT_RUNTIME;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, health_sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    if (cc == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK) {
        fprintf(stderr, "sluice health: %s: %s\n", url, curl_easy_strerror(cc));
    } else {
        printf("%ld %s\n", status, b.data);
        rc = status == 200 ? EXIT_OK : EXIT_RUNTIME;
    }
    curl_easy_cleanup(h);
    return rc;
}
