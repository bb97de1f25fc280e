/* prelude: the Lua files under lua/, embedded at build time (see cmake/embed_lua.cmake).
 * Uses: nothing. Must not: be edited by hand; its table is generated.
 * The last entry has name == NULL. */
#ifndef SLUICE_PRELUDE_H
#define SLUICE_PRELUDE_H
#include <stddef.h>

struct prelude_file {
    const char *name; /* file name without .lua */
    const char *data; /* NUL-terminated text */
    size_t len;       /* length without the NUL */
};

extern const struct prelude_file prelude_files[];

#endif
