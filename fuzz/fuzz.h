/* fuzz: what every fuzz target shares. A target defines LLVMFuzzerTestOneInput and calls the real parsing code
 * of the core library; it is linked either with libFuzzer (the SLUICE_FUZZ build, `make fuzz`) or with
 * standalone.c, which replays files (the ctest smoke over the seed corpora, and crash reproduction).
 * Uses: only the library's public headers. Must not: reimplement or stub what it fuzzes. */
#ifndef SLUICE_FUZZ_H
#define SLUICE_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input as a NUL-terminated string (it may hold NULs of its own); caller frees. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL) abort();
    if (size) memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

#endif
