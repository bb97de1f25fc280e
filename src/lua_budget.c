/* lua_budget: the part of the lua_host gateway that ends a call at its deadline even inside one C function: a
 * per-thread POSIX timer and its real-time signal, interruptible wrappers of the unbounded string functions, the
 * cjson.encode pre-walk, and the block-list heap that lets a VM abandoned mid-instruction still be freed.
 * Uses: Lua 5.4 (as part of the gateway it may include lua.h, like lua_host.c), lua-cjson's encoder, POSIX timers,
 * log. Must not: run script code while interruptible, or let glibc malloc (or anything else holding a lock) run
 * while a call is interruptible: the signal may siglongjmp out of whatever runs then.
 *
 * How a kill works. lh_enter arms the thread's timer at the call's deadline and disarms it after. When the signal
 * arrives during the call, the handler marks the VM killed and installs the count hook on every instruction, so
 * Lua code stops at its next instruction (an unwrapped C function first returns: they are bounded by the memory
 * cap, but a loop of slow ones between two count-hook checks is not, hence a timer for every call).
 * If the thread is inside a wrapped C function ("interruptible") and not inside the allocator, the handler
 * siglongjmps to lh_enter's sigsetjmp; inside the allocator it leaves a note and the allocator jumps when it is
 * done. After a jump the VM is never touched again: lh_enter frees its blocks and marks it dead. */
#include "lua_budget.h"

#include <errno.h>
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
    if (b->L != NULL && b->hook != NULL) lua_sethook(b->L, b->hook, LUA_MASKCOUNT, 1);
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

/* Calls the original function (upvalue 1) with the arguments on the stack while interruptible. Its errors pass
 * through unchanged (lua_error re-raises the memory error message as a memory error). The marker is saved and
 * restored, so it nests, and it is restored on errors too because the original runs under lua_pcall. */
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
    if (rc != LUA_OK) return lua_error(L);
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

void lb_install(lua_State *L)
{
    static const luaL_Reg str[] = {{"find", l_lua_budget_find_match}, {"match", l_lua_budget_find_match},
                                   {"gmatch", l_lua_budget_gmatch}, {"gsub", l_lua_budget_gsub}, {NULL, NULL}};
    lua_getglobal(L, "string");
    for (const luaL_Reg *r = str; r->name != NULL; r++) {
        lua_getfield(L, -1, r->name);
        lua_pushcclosure(L, r->func, 1);
        lua_setfield(L, -2, r->name);
    }
    lua_pop(L, 1);
    lua_getglobal(L, "cjson");
    lua_getfield(L, -1, "encode");
    lua_pushcclosure(L, l_lua_budget_cjson_encode, 1);
    lua_setfield(L, -2, "encode");
    lua_pushnil(L);
    lua_setfield(L, -2, "new");
    /* A kept encode buffer is malloc'ed memory only cjson's __gc frees, and a VM abandoned after a kill never runs
     * it: every encode uses (and frees) its own buffer instead, and scripts cannot turn that back. */
    lua_getfield(L, -1, "encode_keep_buffer");
    lua_pushboolean(L, 0);
    lua_call(L, 1, 0);
    lua_pushnil(L);
    lua_setfield(L, -2, "encode_keep_buffer");
    lua_pop(L, 1);
    lua_getglobal(L, "load");
    lua_pushcclosure(L, l_lua_budget_load, 1);
    lua_setglobal(L, "load");
}
