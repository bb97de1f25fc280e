/* util: small helpers shared by several subsystems: whole-file reads, content hashes, times, ids.
 * Uses: libc, OpenSSL (sha256, random bytes). Must not: know about any other subsystem. */
#ifndef SLUICE_UTIL_H
#define SLUICE_UTIL_H
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Reads a whole file (up to max_len bytes; 0 = 64 MiB). Returns the NUL-terminated text (caller frees) and
 * its length, or NULL with errno set (EFBIG when larger than max_len). */
char *util_read_file(const char *path, size_t max_len, size_t *len);
/* Lower-case hex SHA-256 of data into out (65 bytes). */
void util_sha256_hex(const void *data, size_t len, char out[65]);
/* Wall-clock time in milliseconds since the epoch, and a monotonic clock in milliseconds. */
int64_t util_now_ms(void);
int64_t util_mono_ms(void);
/* The monotonic clock in microseconds (phase timings that millisecond ticks would round to 0 or 1). */
int64_t util_mono_us(void);
/* Formats unix milliseconds as RFC 3339 UTC ("2020-12-04T03:08:01.402Z") into buf (≥ 32 bytes). */
char *util_rfc3339(int64_t ms, char *buf, size_t buflen);
/* Parses RFC 3339 (with optional fraction and Z or ±hh:mm); returns 0 and *ms, or -1. */
int util_parse_rfc3339(const char *text, int64_t *ms);
/* printf into a new string (caller frees); never NULL: out of memory ends the process (mem.h). */
char *util_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* util_printf with a va_list (ap is used up, as by vprintf); never NULL: out of memory ends the process (mem.h). */
char *util_vprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
/* open_memstream(buf, len): a FILE writing into a growing string (fclose, then free *buf); never NULL: out of
 * memory ends the process (mem.h). */
FILE *util_memstream(char **buf, size_t *len);
/* Where a Google REST API is and whether to send credentials, as Google's clients decide it: an emulator's
 * host:port (`emulator_host`, from $PUBSUB_EMULATOR_HOST, $FIRESTORE_EMULATOR_HOST...; may be NULL) wins and means
 * plain HTTP without credentials; else `url`, else `default_url` (trailing '/' dropped). Returns the base URL
 * (caller frees) and *no_auth. */
char *util_api_endpoint(const char *url, const char *default_url, const char *emulator_host, int *no_auth);
/* A new random id of `len` characters from [a-z0-9], starting with a letter, into buf (len + 1 bytes). */
void util_random_id(char *buf, size_t len);
/* Names the calling thread (at most 15 characters are kept; shown by top -H, perf, gdb). Best effort. */
void util_thread_name(const char *name);
/* Moves the calling thread to the round-robin real-time class at priority 1, above every ordinary thread of
 * the machine: for a thread that does little CPU work per wake-up but that everything else waits for. Needs
 * CAP_SYS_NICE (or an RLIMIT_RTPRIO); returns 0, or the errno (EPERM without it; the thread is unchanged). */
int util_thread_realtime(void);
/* The length of the well-formed UTF-8 sequence (RFC 3629: no overlongs, surrogates or code points past
 * U+10FFFF) that starts at s, looking at no more than n bytes; 0 when s does not start one. */
size_t util_utf8_seq(const unsigned char *s, size_t n);
/* qsort/bsearch comparator for arrays of C strings (char *). */
int util_strcmp_ptr(const void *a, const void *b);

#endif
