/* lua_host: the one gateway into Lua: VMs, sandbox (an environment per script), budgets, the watch of calls in
 * progress, plain-data conversion.
 * Uses: Lua 5.4, lua-cjson, jansson, prelude, util, lua_budget (the rest of the gateway: the timer, the heap,
 * the interruptible wrappers). Must not: know about workflows, runs or I/O; no file but this one and
 * lua_budget.c includes lua.h. Every call into Lua goes through lh_enter(). */
#include "lua_host.h"

#include <lauxlib.h>
#include <lua-cjson.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "lua_budget.h"
#include "mem.h"
#include "util.h"
#include "prelude.h"

#define LH_DEFAULT_MEM (64u << 20)
#define LH_DEFAULT_INSTR 50000000ull
#define LH_DEFAULT_TIME 2.0
#define LH_HOOK_STEP 1000      /* instructions between two budget checks */
#define LH_MAX_DEPTH 64        /* nesting depth of converted data */
#define LH_KILL_MSG LB_KILL_MSG
#define LH_RESET_MSG "the VM was reset after a budget kill"
#define LH_OVERRUN_MARGIN 0.25 /* seconds a call may outlive its time budget (docs/workflows.md promises it) */

/* Registry keys (addresses are unique). */
static const char k_env_key = 'e';
static const char k_vm_key = 'v';

/* The calls in progress of every VM created with this watch, for another thread to look at. */
struct lh_watch {
    pthread_mutex_t mu;
    lh_vm *calls; /* linked through watch_next */
};

struct lh_vm {
    lua_State *L;  /* NULL once dead */
    lb_budget b;   /* the heap, the time limit, and the kill state of the call in progress */
    uint64_t instr_limit;
    /* budget of the call in progress */
    uint64_t instr_used;
    struct timespec started;
    int dead;      /* a kill jumped out of the VM mid-instruction: its memory is freed, it answers LH_ERROR */
    char name[128]; /* the chunk name of the script loaded last, for the watch and the overrun warning */
    lh_watch *watch; /* borrowed, may be NULL */
    lh_observer observe; /* told of each call once it is over (NULL: none), with observe_ud */
    void *observe_ud;
    lh_vm *watch_prev, *watch_next; /* under watch->mu, while a call is in progress */
    int watching;
};

const char *lh_status_name(lh_status status)
{
    switch (status) {
    case LH_OK: return "ok";
    case LH_ERROR: return "error";
    case LH_TIMEOUT: return "timeout";
    case LH_NOMEM: return "out of memory";
    }
    return "unknown";
}


/* ---- CPU: count hook plus wall-clock limit; once killed, the hook fires on every instruction ---- */

static lh_vm *vm_of(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_vm_key);
    lh_vm *vm = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return vm;
}

static double elapsed_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static void lh_hook(lua_State *L, lua_Debug *ar)
{
    lh_vm *vm = vm_of(L);
    if (!vm->b.killed) {
        if (ar->event != LUA_HOOKCOUNT) return; /* calls are hooked only once killed */
        vm->instr_used += LH_HOOK_STEP;
        if (vm->instr_used > vm->instr_limit)
            snprintf(vm->b.kill_reason, sizeof vm->b.kill_reason, "%s: more than %llu instructions", LH_KILL_MSG,
                     (unsigned long long)vm->instr_limit);
        else if (elapsed_since(&vm->started) <= vm->b.time_limit)
            return;
        vm->b.killed = 1; /* with an empty reason, lb_kill_reason says "ran longer than" */
        /* From now on every instruction and every call raises again, so a pcall in the script only delays the end,
         * and a library function's loop that calls metamethods stops at the next one. */
        lua_sethook(L, lh_hook, LB_KILLED_MASK, 1);
    }
    luaL_error(L, "%s", lb_kill_reason(&vm->b));
}

/* ---- the sandbox's replacements for base functions ---- */

/* pcall/xpcall that cannot swallow a budget kill: after the protected call returns, a killed VM
 * re-raises. Lua 5.4's own pcall would hand the error to the script. */
static int l_lua_host_pcall(lua_State *L)
{
    luaL_checkany(L, 1);
    int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    lh_vm *vm = vm_of(L);
    if (vm->b.killed) return luaL_error(L, "%s", lb_kill_reason(&vm->b));
    lua_pushboolean(L, status == LUA_OK);
    lua_insert(L, 1);
    return lua_gettop(L);
}

/* The message handler xpcall really installs: it runs the script's handler only while the budget holds.
 * Once killed, it answers at once: an error raised from the count hook reaches the handler with hooks
 * disabled, so a looping script handler could otherwise never be stopped. */
static int l_lua_host_xpcall_handler(lua_State *L)
{
    lh_vm *vm = vm_of(L);
    if (vm->b.killed) {
        lua_pushstring(L, lb_kill_reason(&vm->b));
        return 1;
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int l_lua_host_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, l_lua_host_xpcall_handler, 1);
    lua_replace(L, 2);   /* [f, wrapped handler, args...] */
    lua_pushvalue(L, 1); /* f */
    lua_copy(L, 2, 1);   /* handler to slot 1 */
    lua_replace(L, 2);   /* f to slot 2 */
    int status = lua_pcall(L, n - 2, LUA_MULTRET, 1);
    lh_vm *vm = vm_of(L);
    if (vm->b.killed) return luaL_error(L, "%s", lb_kill_reason(&vm->b));
    lua_pushboolean(L, status == LUA_OK);
    lua_replace(L, 1);
    return lua_gettop(L);
}

/* load: text chunks only; the default environment is the script's own (upvalue 1), never the host's globals. */
static int l_lua_host_load(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, "=(load)");
    int has_env = !lua_isnone(L, 4);
    if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
        luaL_pushfail(L);
        lua_insert(L, -2);
        return 2;
    }
    lua_pushvalue(L, has_env ? 4 : lua_upvalueindex(1));
    if (lua_setupvalue(L, -2, 1) == NULL) lua_pop(L, 1);
    return 1;
}

/* setmetatable without __gc: a finalizer would run outside any call's budget. */
static int l_lua_host_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_getfield(L, 2, "__gc");
        int has_gc = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (has_gc) return luaL_error(L, "__gc metamethods are not allowed in workflows");
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, lua_isnoneornil(L, 2) || lua_istable(L, 2), 2, "nil or table");
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL) return luaL_error(L, "cannot change a protected metatable");
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

/* print goes to the structured log, never to stdout (which belongs to the CLI's output). */
static int l_lua_host_print(lua_State *L)
{
    int n = lua_gettop(L); /* before luaL_buffinit, which may push a placeholder */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1) luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    log_info("lua: %s", lua_tostring(L, -1));
    return 0;
}

static int l_lua_host_readonly(lua_State *L)
{
    return luaL_error(L, "attempt to modify read-only table (field '%s')", luaL_optstring(L, 2, "?"));
}

/* Replaces the table at the top of the stack by a read-only proxy of it. */
static void push_frozen(lua_State *L)
{
    lua_newtable(L);               /* proxy */
    lua_newtable(L);               /* its metatable */
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_lua_host_readonly);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_remove(L, -2);
}

/* ---- building the VM ---- */

/* Pushes a fresh environment for one script and makes it the VM's current one (lh_ref_global reads it). It is a
 * table of its own: the host's base functions and frozen library tables are copied into it, so assigning or
 * clearing a global (_G included) changes nothing another script loaded in the same VM sees; it gets its own math
 * library (math.random's state is per script), its own load (whose default environment is this one) and _G
 * pointing to itself. Its metatable is protected and empty: nothing falls through to the host's globals, which no
 * script can reach. Raises on out of memory (callers are protected). */
static void push_env(lua_State *L)
{
    luaL_checkstack(L, 6, NULL);
    lua_newtable(L);
    int env = lua_gettop(L);
    lua_pushglobaltable(L);
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, env);
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, luaopen_math);
    lua_call(L, 0, 1);
    push_frozen(L);
    lua_setfield(L, env, "math");
    lua_pushvalue(L, env);
    lua_pushcclosure(L, l_lua_host_load, 1);
    lb_wrap_load(L);
    lua_setfield(L, env, "load");
    lua_pushvalue(L, env);
    lua_setfield(L, env, "_G");
    lua_newtable(L);
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, env);
    lua_pushvalue(L, env);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_env_key);
}

/* Builds the host: its globals and the frozen libraries every script environment copies. Argument 1: the lh_vm. */
static int open_sandbox(lua_State *L)
{
    lua_pushvalue(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_vm_key);
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base}, {LUA_STRLIBNAME, luaopen_string}, {LUA_TABLIBNAME, luaopen_table},
        {LUA_MATHLIBNAME, luaopen_math}, {LUA_UTF8LIBNAME, luaopen_utf8}, {NULL, NULL}};
    for (const luaL_Reg *lib = libs; lib->func != NULL; lib++) {
        luaL_requiref(L, lib->name, lib->func, 1);
        lua_pop(L, 1);
    }
    /* os: only the clock and calendar functions. */
    luaL_requiref(L, "_os", luaopen_os, 0);
    lua_newtable(L);
    static const char *const os_keep[] = {"time", "date", "clock", "difftime", NULL};
    for (const char *const *k = os_keep; *k != NULL; k++) {
        lua_getfield(L, -2, *k);
        lua_setfield(L, -2, *k);
    }
    lua_remove(L, -2);
    lua_setglobal(L, "os");
    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    lua_setglobal(L, "cjson");
    /* The package library was never opened: no require, no C modules. */

    lua_pushglobaltable(L);
    /* load: each script environment gets its own (text only, defaulting to that environment). */
    static const char *const drop[] = {"dofile", "loadfile", "collectgarbage", "rawset", "load", NULL};
    for (const char *const *k = drop; *k != NULL; k++) {
        lua_pushnil(L);
        lua_setfield(L, -2, *k);
    }
    static const luaL_Reg repl[] = {{"pcall", l_lua_host_pcall}, {"xpcall", l_lua_host_xpcall},
                                    {"setmetatable", l_lua_host_setmetatable}, {"print", l_lua_host_print},
                                    {NULL, NULL}};
    luaL_setfuncs(L, repl, 0);
    lua_pop(L, 1);
    /* The functions that can run long inside one C call become interruptible (lua_budget.c). */
    lb_install(L);
    /* No bytecode leaves the VM either. */
    lua_getglobal(L, "string");
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    /* The string metatable is shared by every string: hide it. */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);

    /* The prelude runs with the host's globals, so what it defines becomes part of the base. */
    for (const struct prelude_file *p = prelude_files; p->name != NULL; p++) {
        char chunk[128];
        snprintf(chunk, sizeof chunk, "=[prelude %s]", p->name);
        if (luaL_loadbufferx(L, p->data, p->len, chunk, "t") != LUA_OK) return lua_error(L);
        lua_call(L, 0, 0);
    }

    /* Freeze the library tables: scripts see read-only proxies. */
    static const char *const freeze[] = {"string", "table", "math", "utf8", "os", "cjson", "sluice", NULL};
    lua_pushglobaltable(L);
    for (const char *const *k = freeze; *k != NULL; k++) {
        if (lua_getfield(L, -1, *k) != LUA_TTABLE) {
            lua_pop(L, 1);
            continue;
        }
        push_frozen(L);
        lua_setfield(L, -2, *k);
    }
    /* The host globals themselves reject new keys (scripts never see them; the prelude's functions do). */
    lua_newtable(L);
    lua_pushcfunction(L, l_lua_host_readonly);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_pop(L, 1);
    push_env(L); /* a current environment before the first script */
    lua_pop(L, 1);
    return 0;
}

/* An error outside any protected call (a bug: every call that can raise is protected) ends the process with a
 * message rather than Lua's silent abort. */
static int l_lua_host_panic(lua_State *L)
{
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(not a string)";
    log_error("lua: unprotected error in the Lua host, aborting: %s", msg);
    abort();
}

lh_vm *lh_new(const lh_limits *limits, char **err)
{
    lh_vm *vm = xcalloc(1, sizeof *vm);
    lb_init(&vm->b, limits && limits->mem_limit ? limits->mem_limit : LH_DEFAULT_MEM,
            limits && limits->time_limit > 0 ? limits->time_limit : LH_DEFAULT_TIME);
    vm->instr_limit = limits && limits->instr_limit ? limits->instr_limit : LH_DEFAULT_INSTR;
    vm->watch = limits ? limits->watch : NULL;
    vm->observe = limits ? limits->observe : NULL;
    vm->observe_ud = limits ? limits->observe_ud : NULL;
    snprintf(vm->name, sizeof vm->name, "%s", "(no script)");
    vm->L = lua_newstate(lb_alloc, &vm->b);
    if (vm->L == NULL) goto fail;
    lua_atpanic(vm->L, l_lua_host_panic);
    vm->b.L = vm->L;
    vm->b.hook = lh_hook;
    lua_pushcfunction(vm->L, open_sandbox);
    lua_pushlightuserdata(vm->L, vm);
    if (lua_pcall(vm->L, 1, 0, 0) != LUA_OK) {
        if (err) *err = util_printf("lua sandbox setup failed: %s", lua_tostring(vm->L, -1));
        lh_free(vm);
        return NULL;
    }
    vm->b.enforced = 1;
    return vm;
fail:
    if (err) *err = xstrdup("lua: out of memory creating a VM");
    lh_free(vm);
    return NULL;
}

void lh_free(lh_vm *vm)
{
    if (vm == NULL) return;
    if (vm->L != NULL) lua_close(vm->L); /* no __gc can exist, so this cannot run script code */
    lb_free_all(&vm->b);                  /* a dead VM's blocks; nothing left after lua_close */
    free(vm);
}

size_t lh_mem_used(const lh_vm *vm) { return vm->b.used; }

int lh_vm_dead(const lh_vm *vm) { return vm->dead; }

/* Every entry point answers a dead VM the same way. */
static lh_status dead_vm(char **err)
{
    if (err != NULL) *err = util_printf("%s: create a new VM", LH_RESET_MSG);
    return LH_ERROR;
}

/* ---- conversion of plain data ---- */

static int push_json(lua_State *L, json_t *v, int depth)
{
    if (depth > LH_MAX_DEPTH) return luaL_error(L, "data nested deeper than %d levels", LH_MAX_DEPTH);
    luaL_checkstack(L, 4, "data too deep");
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        lua_createtable(L, 0, (int)json_object_size(v));
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            push_json(L, x, depth + 1);
            lua_setfield(L, -2, k);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *x;
        lua_createtable(L, (int)json_array_size(v), 0);
        json_array_foreach(v, i, x) {
            push_json(L, x, depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    }
    case JSON_STRING: lua_pushlstring(L, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: lua_pushinteger(L, (lua_Integer)json_integer_value(v)); break;
    case JSON_REAL: lua_pushnumber(L, json_real_value(v)); break;
    case JSON_TRUE: lua_pushboolean(L, 1); break;
    case JSON_FALSE: lua_pushboolean(L, 0); break;
    case JSON_NULL: lua_pushlightuserdata(L, NULL); break; /* cjson.null */
    }
    return 1;
}

/* Converts the value at `idx` into plain data. Functions become {"$fn": ref, "$line": n} when
 * `refs` is set, an error otherwise. On failure returns NULL with a message on the Lua stack. */
static json_t *to_json(lua_State *L, int idx, int depth, int refs, const char *path);

static int table_is_array(lua_State *L, int idx, size_t *n)
{
    lua_Integer count = 0, max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1)) {
            lua_pop(L, 1);
            return 0;
        }
        lua_Integer k = lua_tointeger(L, -1);
        if (k < 1) {
            lua_pop(L, 1);
            return 0;
        }
        if (k > max) max = k;
        count++;
    }
    if (count == 0 || max != count) return 0;
    *n = (size_t)count;
    return 1;
}

static json_t *to_json(lua_State *L, int idx, int depth, int refs, const char *path)
{
    idx = lua_absindex(L, idx);
    if (depth > LH_MAX_DEPTH) {
        lua_pushfstring(L, "%s: nested deeper than %d levels (a cycle?)", path, LH_MAX_DEPTH);
        return NULL;
    }
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return json_null();
    case LUA_TBOOLEAN: return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) return json_integer((json_int_t)lua_tointeger(L, idx));
        {
            double d = lua_tonumber(L, idx);
            if (!isfinite(d)) {
                lua_pushfstring(L, "%s: number is not finite", path);
                return NULL;
            }
            if (d == floor(d) && fabs(d) < 9007199254740992.0) return json_integer((json_int_t)d);
            return json_real(d);
        }
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        json_t *j = json_stringn(s, len);
        if (j == NULL) lua_pushfstring(L, "%s: string is not valid UTF-8", path);
        return j;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) return json_null();
        break;
    case LUA_TFUNCTION:
        if (!refs) break;
        {
            lua_Debug ar;
            lua_pushvalue(L, idx);
            lua_getinfo(L, ">S", &ar);
            lua_pushvalue(L, idx);
            int ref = luaL_ref(L, LUA_REGISTRYINDEX);
            return json_pack("{s:i,s:i}", "$fn", ref, "$line", ar.linedefined);
        }
    case LUA_TTABLE: {
        luaL_checkstack(L, 8, "data too deep");
        size_t n = 0;
        char sub[256];
        if (table_is_array(L, idx, &n)) {
            json_t *arr = json_array();
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, idx, (lua_Integer)i);
                snprintf(sub, sizeof sub, "%s[%zu]", path, i);
                json_t *x = to_json(L, -1, depth + 1, refs, sub);
                if (x == NULL) {
                    lua_remove(L, -2);
                    json_decref(arr);
                    return NULL;
                }
                lua_pop(L, 1);
                json_array_append_new(arr, x);
            }
            return arr;
        }
        json_t *obj = json_object();
        lua_pushnil(L);
        while (lua_next(L, idx) != 0) {
            if (lua_type(L, -2) != LUA_TSTRING) {
                lua_pop(L, 2);
                json_decref(obj);
                lua_pushfstring(L, "%s: table mixes list items and named keys (or has a non-string key)", path);
                return NULL;
            }
            const char *k = lua_tostring(L, -2);
            snprintf(sub, sizeof sub, "%s.%s", path, k);
            json_t *x = to_json(L, -1, depth + 1, refs, sub);
            if (x == NULL) {
                lua_remove(L, -2);
                lua_remove(L, -2);
                json_decref(obj);
                return NULL;
            }
            json_object_set_new(obj, k, x);
            lua_pop(L, 1);
        }
        return obj;
    }
    default: break;
    }
    lua_pushfstring(L, "%s: a %s value cannot leave the script", path, luaL_typename(L, idx));
    return NULL;
}

/* ---- the gateway ---- */

/* Message handler: adds a traceback to string errors; describes other error values without running
 * any of their metamethods (a __tostring could itself loop). */
static int lh_msgh(lua_State *L)
{
    lh_vm *vm = vm_of(L);
    const char *msg = lua_tostring(L, 1);
    if (vm->b.killed) msg = lb_kill_reason(&vm->b);
    if (msg == NULL) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    /* A traceback helps only when script code is on the stack. */
    lua_Debug ar;
    int script_frames = 0;
    for (int level = 1; lua_getstack(L, level, &ar) && !script_frames; level++)
        if (lua_getinfo(L, "S", &ar) && strcmp(ar.what, "C") != 0) script_frames = 1;
    if (script_frames)
        luaL_traceback(L, L, msg, 1);
    else
        lua_pushstring(L, msg);
    return 1;
}

/* What one trip through the gateway does. Everything that allocates inside the VM (argument and result
 * conversion, references) happens in the trampoline, under lua_pcall, so a memory error is an error
 * result and never a panic. */
typedef struct {
    enum { TRIP_LOAD, TRIP_CALL } kind;
    int ref;                 /* TRIP_CALL: the function */
    json_t *arg;             /* TRIP_CALL: borrowed, may be NULL */
    const char *global_name; /* TRIP_LOAD: fallback declaration global */
    const char *chunkname;
    json_t *out;             /* owned by the trip until handed to the caller */
} lh_trip;

static int lh_trampoline(lua_State *L)
{
    lh_trip *t = lua_touserdata(L, 1);
    if (t->kind == TRIP_CALL) {
        lua_settop(L, 1);
        if (lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref) != LUA_TFUNCTION)
            return luaL_error(L, "internal: reference %d is not a function", t->ref);
        int nargs = 0;
        if (t->arg != NULL) {
            push_json(L, t->arg, 0);
            nargs = 1;
        }
        lua_call(L, nargs, 1);
        t->out = to_json(L, -1, 0, 0, "result");
        if (t->out == NULL) return lua_error(L);
        return 0;
    }
    /* TRIP_LOAD: the chunk is argument 2; it runs in a fresh environment of its own. */
    lua_settop(L, 2);
    push_env(L);
    if (lua_setupvalue(L, 2, 1) == NULL) lua_pop(L, 1);
    lua_pushvalue(L, 2);
    lua_call(L, 0, 1);
    if (!lua_istable(L, -1) && t->global_name != NULL) {
        lua_pop(L, 1);
        lua_rawgetp(L, LUA_REGISTRYINDEX, &k_env_key);
        lua_getfield(L, -1, t->global_name);
        lua_remove(L, -2);
    }
    if (!lua_istable(L, -1)) {
        if (t->global_name != NULL)
            return luaL_error(L, "%s: the script must return its workflow table or set the global '%s'",
                              t->chunkname, t->global_name);
        return luaL_error(L, "%s: the script must return its workflow table", t->chunkname);
    }
    t->out = to_json(L, -1, 0, 1, t->global_name ? t->global_name : "workflow");
    if (t->out == NULL) {
        lua_pushfstring(L, "%s: %s", t->chunkname, lua_tostring(L, -1));
        return lua_error(L);
    }
    return 0;
}

/* ---- the watch: calls in progress, seen from other threads ---- */

lh_watch *lh_watch_new(void)
{
    lh_watch *w = xcalloc(1, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    return w;
}

void lh_watch_free(lh_watch *w)
{
    if (w == NULL) return;
    pthread_mutex_destroy(&w->mu);
    free(w);
}

static void watch_begin(lh_vm *vm)
{
    lh_watch *w = vm->watch;
    if (w == NULL) return;
    pthread_mutex_lock(&w->mu);
    vm->watch_prev = NULL;
    vm->watch_next = w->calls;
    if (w->calls != NULL) w->calls->watch_prev = vm;
    w->calls = vm;
    vm->watching = 1;
    pthread_mutex_unlock(&w->mu);
}

static void watch_end(lh_vm *vm)
{
    lh_watch *w = vm->watch;
    if (w == NULL || !vm->watching) return;
    pthread_mutex_lock(&w->mu);
    if (vm->watch_prev != NULL)
        vm->watch_prev->watch_next = vm->watch_next;
    else
        w->calls = vm->watch_next;
    if (vm->watch_next != NULL) vm->watch_next->watch_prev = vm->watch_prev;
    vm->watching = 0;
    pthread_mutex_unlock(&w->mu);
}

int lh_watch_overdue(lh_watch *w, double margin, char *why, size_t cap)
{
    if (w == NULL) return 0;
    double worst = 0;
    int found = 0;
    pthread_mutex_lock(&w->mu);
    for (lh_vm *vm = w->calls; vm != NULL; vm = vm->watch_next) {
        double ran = elapsed_since(&vm->started);
        double over = ran - vm->b.time_limit;
        if (over <= margin || (found && over <= worst)) continue;
        found = 1;
        worst = over;
        if (why != NULL && cap > 0)
            snprintf(why, cap, "a Lua call in %s has run for %.1f s, past its %.3g s budget", vm->name, ran,
                     vm->b.time_limit);
    }
    pthread_mutex_unlock(&w->mu);
    return found;
}

/* After a call: one that outlived its budget by more than the promised margin is a bug in the budget (a library
 * function that neither checks it nor can be interrupted); say so, with the script. */
static void lh_finished(lh_vm *vm, lh_status st)
{
    watch_end(vm);
    double took = elapsed_since(&vm->started);
    if (took > vm->b.time_limit + LH_OVERRUN_MARGIN)
        log_warn("lua: a call in %s ran %.3f s, %.3f s past its %.3g s budget (%s)", vm->name, took,
                 took - vm->b.time_limit, vm->b.time_limit, lh_status_name(st));
    if (vm->observe != NULL) vm->observe(vm->observe_ud, st, took);
}

/* A kill jumped out of the VM in the middle of a C function (lua_budget.c): its state is inconsistent, so it is
 * never touched again, not even by lua_close. Its blocks are freed and it is dead from now on. */
static lh_status lh_landed(lh_vm *vm, lh_trip *trip, char **err)
{
    lb_leave();
    lb_free_all(&vm->b);
    vm->L = NULL;
    vm->b.L = NULL;
    vm->dead = 1;
    json_decref(trip->out);
    trip->out = NULL;
    if (err != NULL) *err = util_printf("%s (%s)", lb_kill_reason(&vm->b), LH_RESET_MSG);
    return LH_TIMEOUT;
}

/* The one place that calls lua_pcall for host requests: sets the budget, installs the traceback handler,
 * runs the trampoline (already pushed, followed by its `nargs` extra arguments) with the trip as its first
 * argument, and maps the outcome to lh_status. On failure *err is set (caller frees). The stack is left as it was
 * before the pushes, or the VM is dead (lh_vm_dead) when the budget ran out inside a C function. */
static lh_status lh_enter(lh_vm *vm, lh_trip *trip, int nargs, char **err)
{
    lua_State *L = vm->L;
    int top = lua_gettop(L) - 1 - nargs;
    if (!lua_checkstack(L, 4)) {
        lua_settop(L, top);
        if (err != NULL) *err = util_printf("not enough memory (workflow memory limit is %zu bytes)", vm->b.limit);
        return LH_NOMEM;
    }
    lua_pushcfunction(L, lh_msgh);
    lua_insert(L, top + 1);
    lua_pushlightuserdata(L, trip);
    lua_insert(L, top + 3);
    vm->instr_used = 0;
    vm->b.killed = 0;
    vm->b.timed_out = 0;
    vm->b.kill_reason[0] = '\0';
    clock_gettime(CLOCK_MONOTONIC, &vm->started);
    vm->b.deadline.tv_sec = vm->started.tv_sec + (time_t)vm->b.time_limit;
    vm->b.deadline.tv_nsec = vm->started.tv_nsec + (long)((vm->b.time_limit - floor(vm->b.time_limit)) * 1e9);
    if (vm->b.deadline.tv_nsec >= 1000000000L) {
        vm->b.deadline.tv_sec++;
        vm->b.deadline.tv_nsec -= 1000000000L;
    }
    lua_sethook(L, lh_hook, LUA_MASKCOUNT, LH_HOOK_STEP);
    watch_begin(vm);
    sigjmp_buf landing;
    lb_enter(&vm->b, &landing);
    if (sigsetjmp(landing, 0) != 0) {
        lh_status st = lh_landed(vm, trip, err);
        lh_finished(vm, st);
        return st;
    }
    int rc = lua_pcall(L, 1 + nargs, 0, top + 1);
    lb_leave();
    lua_sethook(L, NULL, 0, 0);
    lh_status st = LH_OK;
    if (rc != LUA_OK) {
        st = vm->b.killed ? LH_TIMEOUT : rc == LUA_ERRMEM ? LH_NOMEM : LH_ERROR;
        if (err != NULL) {
            const char *m = lua_tostring(L, -1);
            if (st == LH_NOMEM)
                *err = util_printf("not enough memory (workflow memory limit is %zu bytes)", vm->b.limit);
            else if (st == LH_TIMEOUT && (m == NULL || strstr(m, LH_KILL_MSG) == NULL))
                *err = util_printf("%s", lb_kill_reason(&vm->b)); /* e.g. "error in error handling" */
            else
                *err = util_printf("%s", m ? m : "(no message)");
        }
        json_decref(trip->out);
        trip->out = NULL;
    }
    lua_settop(L, top);
    vm->b.killed = 0;
    /* Garbage from a failed call must not count against the next one. */
    if (st == LH_NOMEM) lua_gc(L, LUA_GCCOLLECT);
    lh_finished(vm, st);
    return st;
}

static lh_status load_chunk(lh_vm *vm, const char *chunkname, const char *src, size_t len, const char *global_name,
                            json_t **decl, char **err, int collect)
{
    *decl = NULL;
    if (vm->dead) return dead_vm(err);
    lua_State *L = vm->L;
    char name[512];
    snprintf(name, sizeof name, "@%s", chunkname);
    int rc = luaL_loadbufferx(L, src, len, name, "t");
    if (rc != LUA_OK) {
        if (err) *err = util_printf("%s", rc == LUA_ERRMEM ? "not enough memory" : lua_tostring(L, -1));
        lua_pop(L, 1);
        return rc == LUA_ERRMEM ? LH_NOMEM : LH_ERROR;
    }
    snprintf(vm->name, sizeof vm->name, "%s", chunkname);
    /* The trampoline gives the chunk its environment (that allocates: like everything that allocates in the VM,
     * it runs protected). */
    lua_pushcfunction(L, lh_trampoline);
    lua_insert(L, -2);
    lh_trip trip = {.kind = TRIP_LOAD, .global_name = global_name, .chunkname = chunkname};
    lh_status st = lh_enter(vm, &trip, 1, err);
    *decl = trip.out;
    /* The parser's and the chunk's temporaries are garbage now; a VM then idles at its real size. */
    if (collect && !vm->dead) lua_gc(L, LUA_GCCOLLECT);
    return st;
}

lh_status lh_load(lh_vm *vm, const char *chunkname, const char *src, size_t len, const char *global_name,
                  json_t **decl, char **err)
{
    return load_chunk(vm, chunkname, src, len, global_name, decl, err, 1);
}

lh_status lh_load_uncollected(lh_vm *vm, const char *chunkname, const char *src, size_t len, const char *global_name,
                              json_t **decl, char **err)
{
    return load_chunk(vm, chunkname, src, len, global_name, decl, err, 0);
}

typedef struct {
    const char *name;
    int line, ref;
} ref_req;

/* lh_ref_global's work, protected: the key's string and the reference allocate. Argument 1: the ref_req. */
static int l_lua_host_ref_global(lua_State *L)
{
    ref_req *q = lua_touserdata(L, 1);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &k_env_key) != LUA_TTABLE) return 0;
    lua_pushstring(L, q->name);
    lua_rawget(L, -2); /* the environment has no metamethods to run */
    if (!lua_isfunction(L, -1) || lua_iscfunction(L, -1)) return 0;
    lua_Debug ar;
    lua_pushvalue(L, -1);
    lua_getinfo(L, ">S", &ar);
    q->line = ar.linedefined;
    q->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int lh_ref_global(lh_vm *vm, const char *name, int *line)
{
    if (vm->dead) return 0;
    lua_State *L = vm->L;
    ref_req q = {.name = name};
    lua_pushcfunction(L, l_lua_host_ref_global);
    lua_pushlightuserdata(L, &q);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        lua_pop(L, 1);
        return 0;
    }
    if (line != NULL && q.ref > 0) *line = q.line;
    return q.ref;
}

lh_status lh_call(lh_vm *vm, int ref, json_t *arg, json_t **result, char **err)
{
    *result = NULL;
    if (vm->dead) return dead_vm(err);
    lua_pushcfunction(vm->L, lh_trampoline);
    lh_trip trip = {.kind = TRIP_CALL, .ref = ref, .arg = arg};
    lh_status st = lh_enter(vm, &trip, 0, err);
    *result = trip.out;
    return st;
}
