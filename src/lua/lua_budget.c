/* lua_budget: the part of the lua_host gateway that ends a call at its deadline even inside one C function: a
 * per-thread POSIX timer and its real-time signal, interruptible wrappers of the unbounded string functions,
 * bounded replacements of the library functions that loop in C (table.insert/remove/move, string.rep; table.sort's
 * default order, the format length of string.format and os.date), the cjson.encode pre-walk, and the block-list
 * heap that lets a VM abandoned mid-instruction still be freed.
 * Uses: Lua 5.4 (as part of the gateway it may include lua.h, like lua_host.c), lua-cjson's encoder, POSIX timers,
 * log. Must not: run script code while interruptible, or let glibc malloc (or anything else holding a lock) run
 * while a call is interruptible: the signal may siglongjmp out of whatever runs then.
 *
 * How a kill works. lh_enter arms the thread's timer at the call's deadline and disarms it after. When the signal
 * arrives during the call, the handler marks the VM killed and installs the count hook on every instruction, so
 * Lua code stops at its next instruction, and at its next function call (a C metamethod called from inside a library
 * function's loop included). An unwrapped C function that calls nothing first returns: each is bounded (by the
 * memory cap, or by its own check of the budget here), but a loop of slow ones between two count-hook checks is
 * not, hence a timer for every call.
 * If the thread is inside a wrapped C function ("interruptible") and not inside the allocator, the handler
 * siglongjmps to lh_enter's sigsetjmp; inside the allocator it leaves a note and the allocator jumps when it is
 * done. After a jump the VM is never touched again: lh_enter frees its blocks and marks it dead. */
#include "lua_budget.h"

#include <errno.h>
#include <limits.h>
#include <lauxlib.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define LB_SIGNAL (SIGRTMIN + 3)
#define LB_WALK_CHECK 4096     /* cjson pre-walk: nodes between two clock reads */
#define LB_JSON_MAX_DEPTH 1000 /* lua-cjson's default encode depth; the pre-walk never goes deeper */
/* cjson.decode cannot be interrupted (it runs in C and keeps its own malloc'ed buffer): its input is capped so
 * that one call stays well inside the 250 ms a call may outlive its budget, even on a loaded machine (a 4 MiB
 * array took 0.22 s on a busy 2-core machine, so 1 MiB: about 55 ms). */
#define LB_JSON_DECODE_MAX (1u << 20)

/* What the signal handler may look at: this thread's call in progress. */
typedef struct {
    int timer_state; /* 0 not created yet, 1 created, -1 cannot be created */
    timer_t timer;
    volatile sig_atomic_t armed;         /* set for the call in progress */
    lb_budget *volatile active;          /* the call in progress, NULL outside lh_enter */
    sigjmp_buf *volatile jump;           /* lh_enter's landing point */
    volatile sig_atomic_t interruptible; /* inside a wrapped C function, not in a script callback */
    volatile sig_atomic_t in_alloc;      /* inside lb_alloc (glibc malloc is not async-signal-safe) */
    volatile sig_atomic_t jump_pending;  /* the signal came in_alloc: the allocator jumps when done */
} lb_thread;

static _Thread_local lb_thread t_lb;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_key; /* deletes a thread's timer when the thread exits */
static int g_ready;

#define LB_FENCE() __atomic_signal_fence(__ATOMIC_SEQ_CST)

/* ---- the kill ---- */

void lb_kill_time(lb_budget *b)
{
    b->timed_out = 1;
    b->killed = 1;
    /* lua_sethook is documented as safe to call from a signal handler. */
    if (b->L != NULL && b->hook != NULL) lua_sethook(b->L, b->hook, LB_KILLED_MASK, 1);
}

const char *lb_kill_reason(lb_budget *b)
{
    if (b->kill_reason[0] == '\0')
        snprintf(b->kill_reason, sizeof b->kill_reason, "%s: ran longer than %.3g s", LB_KILL_MSG, b->time_limit);
    return b->kill_reason;
}

static void lb_on_signal(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    if (si->si_code != SI_TIMER) return;
    int saved_errno = errno;
    lb_thread *t = &t_lb;
    lb_budget *b = t->active;
    if (b != NULL) {
        lb_kill_time(b);
        if (t->interruptible) {
            if (!t->in_alloc) siglongjmp(*t->jump, 1);
            t->jump_pending = 1;
        }
    }
    errno = saved_errno;
}

/* ---- the per-thread timer ---- */

static void lb_thread_exit(void *p)
{
    lb_thread *t = p;
    if (t->timer_state == 1) timer_delete(t->timer);
    t->timer_state = 0;
}

static void lb_after_fork(void)
{
    /* Timers are not inherited: the child creates its own when it needs one. */
    t_lb.timer_state = 0;
    t_lb.armed = 0;
}

static void lb_once(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = lb_on_signal;
    /* SA_NODEFER: the handler may leave by siglongjmp, and sigsetjmp(.., 0) does not restore the mask; the
     * timer is one-shot, so the handler cannot nest. */
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    g_ready = sigaction(LB_SIGNAL, &sa, NULL) == 0 && pthread_key_create(&g_key, lb_thread_exit) == 0;
    if (g_ready) pthread_atfork(NULL, NULL, lb_after_fork);
}

/* Creates this thread's timer on first use. Returns 0 when there is none (then only the count hook and the
 * cjson pre-walk bound the call). */
static int lb_timer(lb_thread *t)
{
    if (t->timer_state != 0) return t->timer_state > 0;
    pthread_once(&g_once, lb_once);
    t->timer_state = -1;
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = LB_SIGNAL;
    sev._sigev_un._tid = gettid();
    if (!g_ready || timer_create(CLOCK_MONOTONIC, &sev, &t->timer) != 0) {
        log_warn("lua: no deadline timer on this thread (%s): string functions cannot be interrupted",
                 strerror(errno));
        return 0;
    }
    pthread_setspecific(g_key, t);
    t->timer_state = 1;
    return 1;
}

static void lb_arm(lb_thread *t)
{
    if (t->armed || t->active == NULL || !lb_timer(t)) return;
    struct itimerspec its = {.it_value = t->active->deadline};
    if (timer_settime(t->timer, TIMER_ABSTIME, &its, NULL) == 0) t->armed = 1;
}

void lb_enter(lb_budget *b, sigjmp_buf *jump)
{
    lb_thread *t = &t_lb;
    t->jump = jump;
    t->interruptible = 0;
    t->jump_pending = 0;
    LB_FENCE();
    t->active = b;
    LB_FENCE();
    lb_arm(t);
}

void lb_leave(void)
{
    lb_thread *t = &t_lb;
    t->active = NULL; /* first: a signal still on its way finds no call */
    LB_FENCE();
    if (t->armed) {
        struct itimerspec off;
        memset(&off, 0, sizeof off);
        timer_settime(t->timer, 0, &off, NULL);
        t->armed = 0;
    }
    t->interruptible = 0;
    t->jump_pending = 0;
    t->jump = NULL;
}

/* ---- the heap: a counting allocator with a hard cap whose blocks are all on one list ---- */

void lb_init(lb_budget *b, size_t limit, double time_limit)
{
    memset(b, 0, sizeof *b);
    b->blocks.prev = b->blocks.next = &b->blocks;
    b->limit = limit;
    b->time_limit = time_limit;
}

static void lb_link(lb_budget *b, lb_block *k)
{
    k->prev = &b->blocks;
    k->next = b->blocks.next;
    k->next->prev = k;
    b->blocks.next = k;
}

static void lb_unlink(lb_block *k)
{
    k->prev->next = k->next;
    k->next->prev = k->prev;
}

/* osize is a type tag when ptr is NULL. Returns NULL when the cap would be passed. */
void *lb_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    lb_budget *b = ud;
    lb_thread *t = &t_lb;
    const size_t hdr = sizeof(lb_block);
    lb_block *old = ptr != NULL ? (lb_block *)ptr - 1 : NULL;
    void *res = NULL;
    if (old == NULL) osize = 0;
    if (nsize == 0 && old == NULL) return NULL;
    if (nsize != 0) {
        size_t grow = old == NULL ? nsize + hdr : nsize > osize ? nsize - osize : 0;
        if (nsize > SIZE_MAX / 2) return NULL;
        if (b->enforced && grow > 0 && (grow > b->limit || b->used > b->limit - grow)) return NULL;
    }
    t->in_alloc = 1;
    LB_FENCE();
    if (old != NULL) lb_unlink(old);
    if (nsize == 0) {
        free(old);
        b->used -= osize + hdr;
    } else {
        lb_block *k = realloc(old, hdr + nsize);
        if (k == NULL) {
            if (old != NULL) lb_link(b, old);
        } else {
            lb_link(b, k);
            b->used = old == NULL ? b->used + nsize + hdr : b->used - osize + nsize;
            res = k + 1;
        }
    }
    LB_FENCE();
    t->in_alloc = 0;
    LB_FENCE();
    if (t->jump_pending && t->interruptible) siglongjmp(*t->jump, 1);
    return res;
}

void lb_free_all(lb_budget *b)
{
    lb_block *k = b->blocks.next;
    while (k != &b->blocks) {
        lb_block *next = k->next;
        free(k);
        k = next;
    }
    b->blocks.prev = b->blocks.next = &b->blocks;
    b->used = 0;
}

/* ---- interruptible wrappers ---- */

/* Re-raises the error on top of the stack, raised by an original library function that a wrapper called. Lua names
 * a function in "bad argument" messages after the code that calls it, and a function called from C has no name
 * ("to '?'"): the message gets the name the script called the wrapper by, as if the wrapper were not there. Other
 * errors pass through unchanged (lua_error re-raises the memory error message as a memory error). */
static int lb_rethrow(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    lua_Debug ar;
    if (msg != NULL && strncmp(msg, "bad argument #", 14) == 0 && strstr(msg, " to '?' (") != NULL &&
        lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.name != NULL) {
        char to[96];
        snprintf(to, sizeof to, " to '%.60s' (", ar.name);
        luaL_gsub(L, msg, " to '?' (", to);
        lua_remove(L, -2);
    }
    return lua_error(L);
}

/* Calls the original function (upvalue 1) with the arguments on the stack, not interruptible, and returns its
 * results; its errors as lb_rethrow says. */
static int l_lua_budget_call(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    if (lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0) != LUA_OK) return lb_rethrow(L);
    return lua_gettop(L);
}

/* Calls the original function (upvalue 1) with the arguments on the stack while interruptible. Its errors as
 * lb_rethrow says. The marker is saved and restored, so it nests, and it is restored on errors too because the
 * original runs under lua_pcall. */
static int l_lua_budget_run(lua_State *L)
{
    lb_thread *t = &t_lb;
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    sig_atomic_t saved = t->interruptible;
    LB_FENCE();
    t->interruptible = t->active != NULL;
    LB_FENCE();
    int rc = lua_pcall(L, n, LUA_MULTRET, 0);
    LB_FENCE();
    t->interruptible = saved;
    LB_FENCE();
    if (rc != LUA_OK) return lb_rethrow(L);
    return lua_gettop(L);
}

/* Arguments are checked here, before the original runs under lua_pcall, so their error messages still name the
 * function the script called ("bad argument #2 to 'find'"). */
static int l_lua_budget_find_match(lua_State *L)
{
    luaL_checklstring(L, 1, NULL);
    luaL_checklstring(L, 2, NULL);
    luaL_optinteger(L, 3, 1);
    return l_lua_budget_run(L);
}

/* gsub's replacement function or table runs script code: it runs with the marker cleared (so whatever it
 * calls, cjson's malloc included, is never jumped out of), and the marker comes back when it returns. */
static int l_lua_budget_gsub_call(lua_State *L)
{
    lb_thread *t = &t_lb;
    sig_atomic_t saved = t->interruptible;
    t->interruptible = 0;
    LB_FENCE();
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    LB_FENCE();
    t->interruptible = saved;
    return 1;
}

/* The table form: gsub looks the first capture up with lua_gettable, which may run an __index metamethod. */
static int l_lua_budget_gsub_index(lua_State *L)
{
    lb_thread *t = &t_lb;
    sig_atomic_t saved = t->interruptible;
    t->interruptible = 0;
    LB_FENCE();
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_gettable(L, -2);
    LB_FENCE();
    t->interruptible = saved;
    return 1;
}

static int l_lua_budget_gsub(lua_State *L)
{
    luaL_checklstring(L, 1, NULL);
    luaL_checklstring(L, 2, NULL);
    int tr = lua_type(L, 3);
    luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE, 3,
                     "string/function/table");
    luaL_optinteger(L, 4, 0);
    if (tr == LUA_TFUNCTION || tr == LUA_TTABLE) {
        /* The same first argument reaches the script either way: gsub passes a function all captures, and the
         * first is the key the table form would use. */
        lua_pushvalue(L, 3);
        lua_pushcclosure(L, tr == LUA_TFUNCTION ? l_lua_budget_gsub_call : l_lua_budget_gsub_index, 1);
        lua_replace(L, 3);
    }
    return l_lua_budget_run(L);
}

/* load (the sandbox's: text only) parses without running an instruction; parsing a chunk the size of the memory
 * cap takes seconds. */
static int l_lua_budget_load(lua_State *L)
{
    luaL_checklstring(L, 1, NULL);
    luaL_optstring(L, 2, NULL);
    return l_lua_budget_run(L);
}

/* gmatch itself only builds the iterator; the iterator does the matching, so it is what gets wrapped. */
static int l_lua_budget_gmatch(lua_State *L)
{
    luaL_checklstring(L, 1, NULL);
    luaL_checklstring(L, 2, NULL);
    luaL_optinteger(L, 3, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    lua_pushcclosure(L, l_lua_budget_run, 1);
    return 1;
}

/* ---- cjson.encode: a pre-walk that bounds the encoder's time and its malloc'ed output ---- */

typedef struct {
    lb_budget *b;
    size_t nodes;
    size_t bytes; /* a lower bound of the JSON text's length */
    size_t room;  /* what the VM can still hold: the text must fit in it as a Lua string */
} lb_walk;

static int lb_past(const struct timespec *now, const struct timespec *deadline)
{
    return now->tv_sec > deadline->tv_sec || (now->tv_sec == deadline->tv_sec && now->tv_nsec >= deadline->tv_nsec);
}

static void lb_walk_value(lua_State *L, lb_walk *w, int depth)
{
    if (++w->nodes % LB_WALK_CHECK == 0) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (lb_past(&now, &w->b->deadline)) {
            lb_kill_time(w->b);
            luaL_error(L, "%s", lb_kill_reason(w->b));
        }
    }
    size_t add = 1; /* a number; other values cjson refuses itself */
    switch (lua_type(L, -1)) {
    case LUA_TSTRING: add = lua_rawlen(L, -1) + 2; break;
    case LUA_TBOOLEAN: add = 4; break;
    case LUA_TLIGHTUSERDATA: add = 4; break; /* null */
    case LUA_TTABLE:
        /* cjson visits a shared subtable once per reference: so does the walk. Same depth rule and message. */
        if (depth >= LB_JSON_MAX_DEPTH) luaL_error(L, "Cannot serialise, excessive nesting (%d)", depth + 1);
        luaL_checkstack(L, 3, "Cannot serialise, excessive nesting");
        add = 2;
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            if (lua_type(L, -2) == LUA_TSTRING) add += lua_rawlen(L, -2) + 3; /* "key": */
            add += 1;                                                         /* the comma */
            lb_walk_value(L, w, depth + 1);
            lua_pop(L, 1);
            if (w->bytes + add > w->room) {
                lua_pop(L, 1);
                break;
            }
        }
        break;
    default: break;
    }
    w->bytes += add;
}

static double lb_seconds(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/* cjson.encode (upvalue 1) after a walk of what it would visit. The walk refuses with the time budget's error
 * when the deadline passes, or when the encoder (which costs more than the walk) could not finish before it;
 * and with a memory error when the text could not fit in the VM, before cjson mallocs it outside the cap. */
static int l_lua_budget_cjson_encode(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    lb_budget *b = ud;
    if (lua_gettop(L) == 1 && lua_type(L, 1) == LUA_TTABLE) {
        lb_walk w = {b, 0, 0, b->limit > b->used ? b->limit - b->used : 0};
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        lua_pushvalue(L, 1);
        lb_walk_value(L, &w, 0);
        lua_pop(L, 1);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (w.bytes > w.room) {
            /* A genuine memory error: ask the allocator for the text's size (after an emergency collection it
             * may even fit). */
            lua_newuserdatauv(L, w.bytes, 0);
            lua_pop(L, 1);
        }
        if (lb_past(&t1, &b->deadline) || 2 * lb_seconds(&t0, &t1) > lb_seconds(&t1, &b->deadline)) {
            lb_kill_time(b);
            return luaL_error(L, "%s", lb_kill_reason(b));
        }
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* cjson.decode (upvalue 1) of at most LB_JSON_DECODE_MAX bytes, and never after the deadline. */
static int l_lua_budget_cjson_decode(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    lb_budget *b = ud;
    size_t len = 0;
    if (lua_type(L, 1) == LUA_TSTRING) (void)lua_tolstring(L, 1, &len);
    if (len > LB_JSON_DECODE_MAX)
        return luaL_error(L, "cjson.decode: a text of %I bytes is over the limit of %I bytes", (lua_Integer)len,
                          (lua_Integer)LB_JSON_DECODE_MAX);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (lb_past(&now, &b->deadline)) {
        lb_kill_time(b);
        return luaL_error(L, "%s", lb_kill_reason(b));
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* ---- bounded replacements: library functions whose loop runs in C without calling anything ---- */

/* Lua's table functions move elements one lua_geti/lua_seti at a time, and a lying __len (or a range such as
 * table.move({}, 1, math.maxinteger - 1, 1, {})) makes that loop as long as a script likes, with no instruction to
 * count and no call for the killed hook to stop. These do the same work and raise the budget's error once the call
 * is killed (the timer's signal marks it) or, every LB_POLL_CLOCK elements, once the deadline has passed (for a
 * thread that has no timer). */
#define LB_POLL_CLOCK 4096
#define LB_TAB_R 1 /* read: a table, or a value whose metatable has __index */
#define LB_TAB_W 2 /* write: __newindex */
#define LB_TAB_L 4 /* length: __len */
/* string.format's and os.date's format strings: their C loop walks the format byte by byte. */
#define LB_FORMAT_MAX 65536

static lb_budget *lb_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

static void lb_poll(lua_State *L, lb_budget *b, lua_Unsigned i)
{
    if (!b->killed) {
        if ((i & (LB_POLL_CLOCK - 1)) != 0 || !b->enforced) return;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (!lb_past(&now, &b->deadline)) return;
        lb_kill_time(b);
    }
    luaL_error(L, "%s", lb_kill_reason(b));
}

static int lb_meta_has(lua_State *L, const char *field)
{
    lua_pushstring(L, field);
    int t = lua_rawget(L, -2);
    lua_pop(L, 1);
    return t != LUA_TNIL;
}

/* The argument must be a table, or have a metatable with the metamethods `what` needs (as the table library
 * requires). */
static void lb_check_table(lua_State *L, int arg, int what)
{
    if (lua_type(L, arg) == LUA_TTABLE) return;
    if (lua_getmetatable(L, arg)) {
        int ok = (!(what & LB_TAB_R) || lb_meta_has(L, "__index")) &&
                 (!(what & LB_TAB_W) || lb_meta_has(L, "__newindex")) &&
                 (!(what & LB_TAB_L) || lb_meta_has(L, "__len"));
        lua_pop(L, 1);
        if (ok) return;
    }
    luaL_checktype(L, arg, LUA_TTABLE);
}

/* table.insert(t, [pos,] value) */
static int l_lua_budget_insert(lua_State *L)
{
    lb_budget *b = lb_of(L);
    lb_check_table(L, 1, LB_TAB_R | LB_TAB_W | LB_TAB_L);
    lua_Integer end = (lua_Integer)((lua_Unsigned)luaL_len(L, 1) + 1u); /* the first empty slot */
    lua_Integer pos = end;
    switch (lua_gettop(L)) {
    case 2: break;
    case 3:
        pos = luaL_checkinteger(L, 2);
        luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)end, 2, "position out of bounds");
        for (lua_Integer i = end; i > pos; i--) { /* shift up */
            lb_poll(L, b, (lua_Unsigned)i);
            lua_geti(L, 1, i - 1);
            lua_seti(L, 1, i);
        }
        break;
    default: return luaL_error(L, "wrong number of arguments to 'insert'");
    }
    lua_seti(L, 1, pos);
    return 0;
}

/* table.remove(t [, pos]) */
static int l_lua_budget_remove(lua_State *L)
{
    lb_budget *b = lb_of(L);
    lb_check_table(L, 1, LB_TAB_R | LB_TAB_W | LB_TAB_L);
    lua_Integer size = luaL_len(L, 1);
    lua_Integer pos = luaL_optinteger(L, 2, size);
    /* argument 1 in the message, as Lua 5.4.4's own says */
    if (pos != size) luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 1, "position out of bounds");
    lua_geti(L, 1, pos); /* the result */
    for (; pos < size; pos++) { /* shift down */
        lb_poll(L, b, (lua_Unsigned)pos);
        lua_geti(L, 1, pos + 1);
        lua_seti(L, 1, pos);
    }
    lua_pushnil(L);
    lua_seti(L, 1, pos);
    return 1;
}

/* table.move(a1, f, e, t [, a2]) */
static int l_lua_budget_move(lua_State *L)
{
    lb_budget *b = lb_of(L);
    lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3), t = luaL_checkinteger(L, 4);
    int dst = !lua_isnoneornil(L, 5) ? 5 : 1;
    lb_check_table(L, 1, LB_TAB_R);
    lb_check_table(L, dst, LB_TAB_W);
    if (e >= f) {
        luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
        lua_Integer n = e - f + 1;
        luaL_argcheck(L, t <= LUA_MAXINTEGER - n + 1, 4, "destination wrap around");
        /* Within one table, a destination that starts inside the source is copied from the end. */
        int backwards = t <= e && t > f && (dst == 1 || lua_compare(L, 1, dst, LUA_OPEQ));
        for (lua_Integer i = 0; i < n; i++) {
            lb_poll(L, b, (lua_Unsigned)i);
            lua_Integer k = backwards ? n - 1 - i : i;
            lua_geti(L, 1, f + k);
            lua_seti(L, dst, t + k);
        }
    }
    lua_pushvalue(L, dst);
    return 1;
}

/* string.rep(s, n [, sep]): Lua's copies s and sep once per repetition, so string.rep("", math.maxinteger) loops
 * for ever and a 60 MB result takes a third of a second. This one returns "" for empty pieces at once and fills the
 * result by doubling (a few memcpy calls). Same limits and messages. */
static int l_lua_budget_rep(lua_State *L)
{
    size_t l, lsep;
    const char *s = luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    const char *sep = luaL_optlstring(L, 3, "", &lsep);
    if (n <= 0 || l + lsep == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    if (l + lsep < l || l + lsep > (size_t)INT_MAX / (lua_Unsigned)n) return luaL_error(L, "resulting string too large");
    size_t unit = l + lsep, total = (size_t)n * unit - lsep;
    luaL_Buffer buf;
    char *p = luaL_buffinitsize(L, &buf, total);
    memcpy(p, s, l);
    if (n > 1) {
        /* after the first s: (sep s) n - 1 times; write one, then copy what is written until it is all there */
        char *rest = p + l;
        size_t have = unit, need = (size_t)(n - 1) * unit;
        memcpy(rest, sep, lsep);
        memcpy(rest + lsep, s, l);
        while (have < need) {
            size_t c = have < need - have ? have : need - have;
            memcpy(rest + have, rest, c);
            have += c;
        }
    }
    luaL_pushresultsize(&buf, total);
    return 1;
}

/* table.sort's default order as a function: every comparison becomes a call, which the killed hook stops (Lua's
 * own default compares inside its C loop, and sorting a few million numbers takes seconds). */
static int l_lua_budget_less(lua_State *L)
{
    lua_pushboolean(L, lua_compare(L, 1, 2, LUA_OPLT));
    return 1;
}

static int l_lua_budget_sort(lua_State *L)
{
    lb_check_table(L, 1, LB_TAB_R | LB_TAB_W | LB_TAB_L);
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_pushcfunction(L, l_lua_budget_less);
    }
    return l_lua_budget_call(L);
}

/* string.format and os.date (upvalue 1) with a format string of at most LB_FORMAT_MAX bytes. */
static int l_lua_budget_format(lua_State *L)
{
    int t = lua_type(L, 1);
    if ((t == LUA_TSTRING || t == LUA_TNUMBER) && lua_rawlen(L, 1) > LB_FORMAT_MAX) {
        size_t len;
        lua_tolstring(L, 1, &len);
        if (len > LB_FORMAT_MAX) luaL_argerror(L, 1, "format string longer than 65536 bytes");
    }
    return l_lua_budget_call(L);
}

static void lb_replace(lua_State *L, const char *name, lua_CFunction fn, int wrap)
{
    if (wrap) {
        lua_getfield(L, -1, name);
        lua_pushcclosure(L, fn, 1);
    } else {
        lua_pushcfunction(L, fn);
    }
    lua_setfield(L, -2, name);
}

void lb_wrap_load(lua_State *L) { lua_pushcclosure(L, l_lua_budget_load, 1); }

void lb_install(lua_State *L)
{
    static const luaL_Reg str[] = {{"find", l_lua_budget_find_match}, {"match", l_lua_budget_find_match},
                                   {"gmatch", l_lua_budget_gmatch}, {"gsub", l_lua_budget_gsub}, {NULL, NULL}};
    /* Pure functions (no metamethod, no script code, only the VM's allocator) whose work grows with a string's
     * length: the signal may interrupt them. */
    static const char *const str_pure[] = {"upper", "lower", "reverse", "pack", "unpack", "packsize", NULL};
    static const char *const utf8_pure[] = {"len", "offset", "codepoint", "char", NULL};
    lua_getglobal(L, "string");
    for (const luaL_Reg *r = str; r->name != NULL; r++) lb_replace(L, r->name, r->func, 1);
    for (const char *const *k = str_pure; *k != NULL; k++) lb_replace(L, *k, l_lua_budget_run, 1);
    lb_replace(L, "rep", l_lua_budget_rep, 0);
    lb_replace(L, "format", l_lua_budget_format, 1);
    lua_pop(L, 1);
    lua_getglobal(L, "utf8");
    for (const char *const *k = utf8_pure; *k != NULL; k++) lb_replace(L, *k, l_lua_budget_run, 1);
    lua_pop(L, 1);
    lua_getglobal(L, "table");
    lb_replace(L, "insert", l_lua_budget_insert, 0);
    lb_replace(L, "remove", l_lua_budget_remove, 0);
    lb_replace(L, "move", l_lua_budget_move, 0);
    lb_replace(L, "sort", l_lua_budget_sort, 1);
    lua_pop(L, 1);
    lua_getglobal(L, "os");
    lb_replace(L, "date", l_lua_budget_format, 1);
    lua_pop(L, 1);
    lua_getglobal(L, "cjson");
    lua_getfield(L, -1, "encode");
    lua_pushcclosure(L, l_lua_budget_cjson_encode, 1);
    lua_setfield(L, -2, "encode");
    lua_getfield(L, -1, "decode");
    lua_pushcclosure(L, l_lua_budget_cjson_decode, 1);
    lua_setfield(L, -2, "decode");
    lua_pushnil(L);
    lua_setfield(L, -2, "new");
    /* A kept encode buffer is malloc'ed memory only cjson's __gc frees, and a VM abandoned after a kill never runs
     * it: every encode uses (and frees) its own buffer instead, and scripts cannot turn that back. */
    lua_getfield(L, -1, "encode_keep_buffer");
    lua_pushboolean(L, 0);
    lua_call(L, 1, 0);
    lua_pushnil(L);
    lua_setfield(L, -2, "encode_keep_buffer");
    /* The other settings are state of the one cjson module every script of the VM shares: one script's choice would
     * change another's encoding. */
    static const char *const settings[] = {"encode_sparse_array", "encode_max_depth", "decode_max_depth",
                                           "encode_number_precision", "encode_invalid_numbers",
                                           "decode_invalid_numbers", NULL};
    for (const char *const *k = settings; *k != NULL; k++) {
        lua_pushnil(L);
        lua_setfield(L, -2, *k);
    }
    lua_pop(L, 1);
}
