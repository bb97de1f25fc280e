/* emulator: `sluice emulator`, a local stand-in for the Dataflow REST API and Google's identity endpoints
 * (OAuth token, metadata server, JWKS), with job lifecycles, API lag, fault injection and event delivery
 * (Pub/Sub push and Eventarc) to a configured URL. The one public entry of src/emulator/ (its files share the
 * private emu.h). See docs/emulator.md.
 * Uses: libmicrohttpd, jansson, jwt, libcurl (event delivery), log. Must not: use engine, store or workflow
 * code; it is a separate process that only speaks HTTP. */
#ifndef SLUICE_EMULATOR_H
#define SLUICE_EMULATOR_H

/* Entry point of `sluice emulator ARGS...` (argv[0] is "emulator"). Returns the process exit code. */
int emu_main(int argc, char **argv);

#endif
