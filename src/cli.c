/* cli: the sluice commands. Uses: every subsystem. Must not: be called by any other subsystem. */
#include "cli.h"

#include "emulator.h"

#include <stdio.h>
#include <string.h>

int cli_main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "emulator") == 0) return emu_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        printf("sluice %s\n", SLUICE_VERSION);
        return 0;
    }
    fprintf(stderr, "usage: sluice COMMAND [ARGS]\n");
    return 2;
}
