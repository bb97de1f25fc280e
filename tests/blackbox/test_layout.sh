#!/usr/bin/env bash
# test_layout: the source tree keeps the architecture the README's "Layout" draws. src/ has one folder per part, in
# the order data flows (CMakeLists.txt SRC_PARTS: base, gcp, store, lua, engine, serve, emulator, cli); a file may
# include headers of its own part and of the parts before it, never of a later one (nothing lower calls back up),
# every .c and .h lives in a part, and no two modules include each other, directly or around a longer loop (a
# private header, store_backend.h or engine_internal.h, counts as its module's). And out of memory is handled one way
# (src/base/mem.h): no code outside mem.c calls libc's malloc, calloc, realloc, strdup or strndup, nor asprintf or
# vasprintf outside util.c's util_vprintf (util_printf formats), nor open_memstream outside util.c's util_memstream,
# but for the Lua allocator's realloc (lua_budget.c: a refusal there keeps a script's memory budget); comments and
# string literals do not count. Reads the sources only.
set -euo pipefail
SRC=${SLUICE_SRC:?}
python3 - "$SRC" <<'PY'
import os, re, sys
src = sys.argv[1]
parts = re.search(r'set\(SRC_PARTS ([a-z ]+)\)', open(os.path.join(src, 'CMakeLists.txt')).read()).group(1).split()
fails = 0
def fail(msg):
    global fails
    fails += 1
    print('FAIL: ' + msg, file=sys.stderr)
part_of, files = {}, []
for entry in sorted(os.listdir(os.path.join(src, 'src'))):
    path = os.path.join(src, 'src', entry)
    if not os.path.isdir(path):
        fail(f'src/{entry} is in no part')
        continue
    if entry not in parts:
        fail(f'src/{entry}/ is not a part in SRC_PARTS')
        continue
    for f in sorted(os.listdir(path)):
        if f.endswith(('.c', '.h')):
            part_of[f[:-2]] = entry
            files.append((entry, f))
# A private header (one with no .c of its own, named after a module: store_backend.h, engine_internal.h) is part
# of that module.
has_c = {f[:-2] for _, f in files if f.endswith('.c')}
def module(name):
    if name in has_c:
        return name
    owners = [m for m in has_c if name.startswith(m + '_')]
    return max(owners, key=len) if owners else name
edges = {}
for part, f in files:
    mod = module(f[:-2])
    for inc in re.findall(r'^#include "([a-z_]+)\.h"', open(os.path.join(src, 'src', part, f)).read(), re.M):
        if inc not in part_of:
            continue  # a generated header
        if module(inc) != mod:
            edges.setdefault(mod, set()).add(module(inc))
        if parts.index(part_of[inc]) > parts.index(part):
            fail(f'src/{part}/{f} includes {inc}.h of {part_of[inc]}/, a later part')
# module cycles (Tarjan's strongly connected components)
index, low, stack, on, comps, n = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: comps.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in sorted({module(m) for m in part_of}):
    if v not in index: visit(v)
for c in comps:
    fail('modules include each other: ' + ' <-> '.join(c))
# Allocation goes through mem.h: the libc allocators each file may call, and why (every other file: none).
alloc_ok = {'base/mem.c': {'malloc', 'calloc', 'realloc', 'strdup', 'strndup'},  # the x-allocators themselves
            'base/util.c': {'vasprintf', 'open_memstream'},  # util_vprintf, util_memstream: end the process on failure
            'lua/lua_budget.c': {'realloc'}}  # the Lua allocator: a refusal keeps a script's budget (mem.h)
code_only = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
alloc_call = re.compile(r'(?<![\w.>])(v?asprintf|malloc|calloc|realloc|strdup|strndup|open_memstream)\s*\(')
for part, f in files:
    text = code_only.sub(lambda m: '\n' * m.group().count('\n') or ' ', open(os.path.join(src, 'src', part, f)).read())
    for m in alloc_call.finditer(text):
        if m.group(1) not in alloc_ok.get(f'{part}/{f}', ()):
            fail(f'src/{part}/{f}:{text.count(chr(10), 0, m.start()) + 1} calls {m.group(1)}: use mem.h\'s '
                 f'x-allocators, or util_printf / util_vprintf / util_memstream (out of memory ends the process)')
print(f'ok: {len(files)} files in {len(parts)} parts, {sum(len(e) for e in edges.values())} includes between modules, '
      f'none upward, no cycle, no raw allocator' if fails == 0 else f'{fails} layout problem(s)')
sys.exit(1 if fails else 0)
PY
