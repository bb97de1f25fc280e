/* lua_budget: the part of the lua_host gateway that bounds a call's time and memory even inside one C function:
 * the counting block-list allocator, the per-thread deadline timer and its signal, the interruptible wrappers.
 * Uses: Lua 5.4, POSIX timers and signals. Must not: be used by anything but lua_host.c (this header includes
 * lua.h; lua_host.c and lua_budget.c are the only files that may), run script code, or call glibc malloc while
 * a call is interruptible. */
#ifndef SLUICE_LUA_BUDGET_H
#define SLUICE_LUA_BUDGET_H
#include <lua.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <time.h>

/* One block of the VM's heap: every block the allocator hands out starts with this, so all of a VM's memory can be
 * freed without asking Lua (after a kill left the VM inconsistent). */
typedef struct lb_block {
    _Alignas(max_align_t) struct lb_block *prev;
    struct lb_block *next;
} lb_block;

/* A VM's budget: its heap and the state of the call in progress. lua_getallocf(L) returns it. */
typedef struct lb_budget {
    lb_block blocks;  /* sentinel of the circular list of live blocks */
    size_t used;      /* bytes held, headers included */
    size_t limit;
    int enforced;     /* off while the VM is being built */
    lua_State *L;
    lua_Hook hook;    /* the count hook, installed on every instruction once killed */
    double time_limit;
    struct timespec deadline;          /* CLOCK_MONOTONIC, of the call in progress */
    volatile sig_atomic_t killed;      /* the call must end: every instruction raises */
    volatile sig_atomic_t timed_out;   /* killed by the clock (the reason is formatted lazily) */
    char kill_reason[96];
} lb_budget;

#define LB_KILL_MSG "script budget exceeded"
/* The hook of a killed call: every instruction and every function call (a C function too, such as a metamethod
 * called from inside a library function's loop) raises the budget's error. */
#define LB_KILLED_MASK (LUA_MASKCOUNT | LUA_MASKCALL)

void lb_init(lb_budget *b, size_t limit, double time_limit);
/* The lua_Alloc of every VM; `ud` is its lb_budget. */
void *lb_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
/* Frees every block of the heap without touching the VM (which must never be used again). */
void lb_free_all(lb_budget *b);

/* The kill message of a killed call (borrowed until the next call). */
const char *lb_kill_reason(lb_budget *b);
/* Marks the call killed for running past its deadline (signal-safe). */
void lb_kill_time(lb_budget *b);

/* Starts a call on this thread: from now until lb_leave, a deadline reached inside a wrapped C function
 * siglongjmps to `jump` (the caller's sigsetjmp(*jump, 0) point). The deadline must be set. */
void lb_enter(lb_budget *b, sigjmp_buf *jump);
void lb_leave(void);

/* Installs, in the global (not yet frozen) tables: interruptible wrappers of string.find/match/gmatch/gsub,
 * string.upper/lower/reverse/pack/unpack/packsize, utf8.len/offset/codepoint/char; bounded
 * replacements of string.rep and table.insert/remove/move (their loops check the budget); table.sort with a
 * default comparison the killed hook can stop; string.format and os.date with a format of at most 64 KiB; the
 * cjson.encode pre-walk. Removes cjson.new (a second, unwrapped encoder), cjson.encode_keep_buffer (turned off: a
 * kept buffer would leak with an abandoned VM) and cjson's other settings (state shared by every script of the
 * VM). Raises on out of memory. */
void lb_install(lua_State *L);
/* Replaces the sandbox's load function on top of the stack by its interruptible wrapper (each script environment
 * has its own load). */
void lb_wrap_load(lua_State *L);

#endif
