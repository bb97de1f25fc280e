#!/usr/bin/env bash
# test_test_kinds: tests/unit holds only tests that start no process (README, "Layout"); the cmocka tests that start
# one (the sluice binary, `sluice emulator`, PostgreSQL, Google's Firestore emulator, a child of their own) live in
# tests/integration. Fails when a .c or .h file in tests/unit calls fork, vfork, an exec*, posix_spawn*, popen,
# system or tu_run (tests/integration/testproc.h), or includes a harness that starts processes (pg_harness.h,
# fs_harness.h, store_fixture.h, emu_harness.h, serve_harness.h, testproc.h). Comments and string literals do not
# count. Reads the sources only.
set -euo pipefail
SRC=${SLUICE_SRC:?}
python3 - "$SRC" <<'PY'
import os, re, sys
src = sys.argv[1]
unit = os.path.join(src, 'tests', 'unit')
CALL = re.compile(r'\b(fork|vfork|exec(?:l|lp|le|v|vp|vpe|ve)|fexecve|posix_spawnp?|popen|system|tu_run)\s*\(')
HARNESS = ('pg_harness.h', 'fs_harness.h', 'store_fixture.h', 'emu_harness.h', 'serve_harness.h', 'testproc.h')
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)
# Comments and string/char literals, blanked out (newlines kept, so line numbers hold); includes are read first.
CODE = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
fails, files = 0, 0
def fail(msg):
    global fails
    fails += 1
    print('FAIL: ' + msg, file=sys.stderr)
for f in sorted(os.listdir(unit)):
    if not f.endswith(('.c', '.h')):
        continue
    files += 1
    text = open(os.path.join(unit, f), encoding='utf-8', errors='replace').read()
    for m in INCLUDE.finditer(text):
        if os.path.basename(m.group(1)) in HARNESS:
            line = text.count('\n', 0, m.start()) + 1
            fail(f'tests/unit/{f}:{line} includes {m.group(1)}, which starts processes: the test belongs in '
                 'tests/integration')
    code = CODE.sub(lambda m: re.sub(r'[^\n]', ' ', m.group(0)), text)
    for m in CALL.finditer(code):
        line = code.count('\n', 0, m.start()) + 1
        fail(f'tests/unit/{f}:{line} calls {m.group(1)}(): a test that starts a process belongs in tests/integration')
print(f'ok: {files} files in tests/unit, none starts a process' if fails == 0 else
      f'{fails} process start(s) in tests/unit')
sys.exit(1 if fails else 0)
PY
