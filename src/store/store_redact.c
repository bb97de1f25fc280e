/* store_redact: keeps PostgreSQL secrets out of what the store's users print: a store URL/conninfo shown in a
 * message, and libpq's error messages, which can echo parts of the connection string.
 * Uses: libpq (PQconninfoParse, PQconndefaults: which keywords exist and which are secret), store_backend.
 * Must not: connect anywhere or change what is passed to libpq; it only rewrites text meant for people. */
#include <ctype.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "store.h"
#include "store_backend.h"
#include "util.h"

#define MASK "***"
/* Secrets shorter than this are not searched for in free text (a one-letter password would mask every such
 * letter); libpq echoes a well-formed connection string's password nowhere, and an unparseable string's echoes
 * are quoted, which are masked whole. */
#define MIN_SECRET 3

/* 1 when `kw` (n bytes) is a libpq keyword, and (secret != NULL) *secret = 1 when libpq marks it as one to hide
 * (dispchar "*": password, sslpassword). */
static int pg_keyword(const char *kw, size_t n, int *secret)
{
    PQconninfoOption *opts = PQconndefaults();
    int found = 0;
    for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL && !found; o++)
        if (strlen(o->keyword) == n && strncmp(o->keyword, kw, n) == 0) {
            found = 1;
            if (secret) *secret = o->dispchar != NULL && o->dispchar[0] == '*';
        }
    PQconninfoFree(opts);
    return found;
}

static int is_url(const char *s)
{
    return strncmp(s, "postgres://", 11) == 0 || strncmp(s, "postgresql://", 13) == 0;
}

/* In a URL, the text between the user's ':' and the last '@' (the password as written, percent-encoded or not):
 * *at and *len, or 0 when there is none. The last '@', not the first: a password with an unencoded '@' or '/'
 * is then still covered (at worst, more than the password is masked). */
static int url_password_span(const char *url, size_t *at, size_t *len)
{
    const char *p = strstr(url, "://") + 3, *last = strrchr(p, '@');
    if (last == NULL) return 0;
    const char *colon = memchr(p, ':', (size_t)(last - p));
    if (colon == NULL) return 0;
    *at = (size_t)(colon + 1 - url);
    *len = (size_t)(last - colon - 1);
    return 1;
}

/* The values to keep out of messages: the secret options libpq parses out of `conninfo` (decoded) and, for a
 * URL, the password as written. Returns how many (at most `cap`, each caller-freed); *parsed = 0 when libpq
 * cannot parse the string. */
static size_t pg_secrets(const char *conninfo, char **out, size_t cap, int *parsed)
{
    size_t n = 0;
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    PQfreemem(perr);
    *parsed = opts != NULL;
    for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL && n < cap; o++)
        if (o->val != NULL && o->val[0] != '\0' && o->dispchar != NULL && o->dispchar[0] == '*') out[n++] = xstrdup(o->val);
    PQconninfoFree(opts);
    size_t at, len;
    if (n < cap && is_url(conninfo) && url_password_span(conninfo, &at, &len) && len > 0)
        out[n++] = xstrndup(conninfo + at, len);
    size_t kept = 0; /* an allocation that failed leaves a hole */
    for (size_t i = 0; i < n; i++)
        if (out[i] != NULL) out[kept++] = out[i];
    return kept;
}

/* Writes `s` as a libpq conninfo value: bare when it is a plain word, else single-quoted. */
static void put_value(FILE *f, const char *s)
{
    int plain = s[0] != '\0' && strpbrk(s, " \t\n\r\f\v'\\") == NULL;
    if (plain) {
        fputs(s, f);
        return;
    }
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

/* A URL with its password and secret query parameters masked (by hand: the text as written is shown). */
static void put_url(FILE *f, const char *url)
{
    size_t at, len;
    const char *rest = url;
    if (url_password_span(url, &at, &len)) {
        fwrite(url, 1, at, f);
        fputs(MASK, f);
        rest = url + at + len;
    }
    const char *q = strchr(rest, '?');
    if (q == NULL) {
        fputs(rest, f);
        return;
    }
    fwrite(rest, 1, (size_t)(q + 1 - rest), f);
    for (const char *p = q + 1; *p;) {
        size_t plen = strcspn(p, "&");
        const char *eq = memchr(p, '=', plen);
        int secret = 0;
        if (eq != NULL && pg_keyword(p, (size_t)(eq - p), &secret) && secret) {
            fwrite(p, 1, (size_t)(eq + 1 - p), f);
            fputs(MASK, f);
        } else {
            fwrite(p, 1, plen, f);
        }
        p += plen;
        if (*p == '&') fputc(*p++, f);
    }
}

char *store_url_redacted(const char *url)
{
    if (url == NULL) return xstrdup("");
    /* Any other scheme://user:password@... (refused by store_open) is masked as a URL too. */
    int pg = store_postgres_is_conninfo(url);
    if (!pg && strstr(url, "://") == NULL) return xstrdup(url);
    char *buf = NULL;
    size_t size = 0;
    FILE *f = util_memstream(&buf, &size);
    if (!pg || is_url(url)) {
        put_url(f, url);
    } else {
        /* "keyword=value ...": rebuilt from libpq's own parse, the secret values masked. */
        char *perr = NULL;
        PQconninfoOption *opts = PQconninfoParse(url, &perr);
        PQfreemem(perr);
        if (opts == NULL) fputs("(a PostgreSQL connection string libpq cannot parse; not shown)", f);
        int secrets = 0;
        for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++)
            secrets += o->val != NULL && o->dispchar != NULL && o->dispchar[0] == '*';
        if (opts != NULL && secrets == 0) { /* nothing to hide: as given */
            fputs(url, f);
            PQconninfoFree(opts);
            opts = NULL;
        }
        int first = 1;
        for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++) {
            if (o->val == NULL) continue;
            fprintf(f, "%s%s=", first ? "" : " ", o->keyword);
            if (o->dispchar != NULL && o->dispchar[0] == '*')
                fputs(MASK, f);
            else
                put_value(f, o->val);
            first = 0;
        }
        PQconninfoFree(opts);
    }
    if (fclose(f) != 0) mem_out_of_memory(0); /* a memory stream's last flush */
    return buf;
}

/* Replaces msg[from, from + n) with MASK; returns the new string (the old one freed). */
static char *splice(char *msg, size_t from, size_t n)
{
    size_t len = strlen(msg);
    char *m = xmalloc(len - n + sizeof MASK);
    memcpy(m, msg, from);
    memcpy(m + from, MASK, sizeof MASK - 1);
    memcpy(m + from + sizeof MASK - 1, msg + from + n, len - from - n + 1);
    free(msg);
    return m;
}

/* 1 when s[0, n) and a secret have MIN_SECRET bytes in a row in common: the fragment holds a piece of it (a
 * password with an unencoded '@' is partly taken for the host: "ret@PW@127.0.0.1"). */
static int shares_secret(const char *s, size_t n, char *const *secrets, size_t ns)
{
    for (size_t i = 0; i < ns; i++) {
        size_t sl = strlen(secrets[i]);
        for (size_t k = 0; k + MIN_SECRET <= sl; k++)
            if (memmem(s, n, secrets[i] + k, MIN_SECRET) != NULL) return 1;
    }
    return 0;
}

static int has_alnum(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (isalnum((unsigned char)s[i])) return 1;
    return 0;
}

void store_pg_scrub(const char *conninfo, char **msg)
{
    if (conninfo == NULL || msg == NULL || *msg == NULL) return;
    char *secrets[8];
    int parsed = 1;
    size_t ns = pg_secrets(conninfo, secrets, sizeof secrets / sizeof *secrets, &parsed);
    char *m = *msg;
    /* Quoted fragments ("..."): libpq quotes what it echoes. When it could not parse the string, any fragment
     * may be a piece of a password (`missing "=" after "PW"`), so all but keywords are masked; else those that
     * share a piece with a secret (a URL password with an unencoded '/' or '@' is parsed as a port or a host). */
    for (size_t i = 0; m[i] != '\0'; i++) {
        if (m[i] != '"') continue;
        char *close = strchr(m + i + 1, '"');
        if (close == NULL) break;
        size_t n = (size_t)(close - (m + i + 1));
        int mask = n > 0 && (parsed ? shares_secret(m + i + 1, n, secrets, ns)
                                    : has_alnum(m + i + 1, n) && !pg_keyword(m + i + 1, n, NULL));
        if (mask) {
            m = splice(m, i + 1, n);
            i += sizeof MASK; /* past the mask and its closing quote */
        } else {
            i += n + 1;
        }
    }
    /* Then every other occurrence of a secret. */
    for (size_t s = 0; s < ns; s++) {
        size_t sl = strlen(secrets[s]);
        char *hit;
        size_t from = 0;
        while (sl >= MIN_SECRET && (hit = strstr(m + from, secrets[s])) != NULL) {
            size_t at = (size_t)(hit - m);
            m = splice(m, at, sl);
            from = at + sizeof MASK - 1;
        }
    }
    for (size_t s = 0; s < ns; s++) {
        explicit_bzero(secrets[s], strlen(secrets[s]));
        free(secrets[s]);
    }
    *msg = m;
}
