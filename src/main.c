/* main: process entry; hands argv to the CLI.
 * Uses: cli. Must not: hold any logic of its own. */
#include "cli.h"

int main(int argc, char **argv) { return cli_main(argc, argv); }
