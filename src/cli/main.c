/* main: process entry; tunes the allocator, sets the out-of-memory policy (mem.h) and hands argv to the CLI.
 * Uses: cli, mem. Must not: hold any logic of its own. */
#include <malloc.h>

#include "cli.h"
#include "mem.h"

int main(int argc, char **argv)
{
    /* glibc returns freed heap to the kernel as soon as 128 KiB sit free at its top; under load (HTTP buffers,
     * SQLite pages, JSON) that meant a brk() shrink and a TLB flush on every CPU hundreds of times a second,
     * a third of the engine's time in bench_engine. Keep up to 8 MiB instead. */
    mallopt(M_TRIM_THRESHOLD, 8 << 20);
    mallopt(M_TOP_PAD, 1 << 20);
    mem_install();
    return cli_main(argc, argv);
}
