/* Lua host: the gateway's results, exact messages, budgets, and one test per sandbox escape attempt. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_host.h"

typedef struct {
    lh_vm *vm;
    int ref;
} fx;

static lh_limits small_limits = {.mem_limit = 8u << 20, .instr_limit = 2000000, .time_limit = 1.0};

/* Loads `src` as a script that returns a table with field `f`, and references it. */
static int setup_src(fx *f, const char *src)
{
    char *err = NULL;
    f->vm = lh_new(&small_limits, &err);
    if (f->vm == NULL) {
        fprintf(stderr, "lh_new: %s\n", err);
        free(err);
        return -1;
    }
    json_t *decl = NULL;
    lh_status st = lh_load(f->vm, "t.lua", src, strlen(src), NULL, &decl, &err);
    if (st != LH_OK) {
        fprintf(stderr, "lh_load: %s\n", err);
        free(err);
        return -1;
    }
    f->ref = (int)json_integer_value(json_object_get(json_object_get(decl, "f"), "$fn"));
    json_decref(decl);
    return 0;
}

/* Calls f() and returns its status; *msg gets the error (caller frees) or NULL. */
static lh_status call(const char *src, json_t *arg, json_t **out, char **msg)
{
    fx f = {0};
    if (setup_src(&f, src) != 0) return (lh_status)-1;
    json_t *res = NULL;
    char *err = NULL;
    lh_status st = lh_call(f.vm, f.ref, arg, &res, &err);
    if (out)
        *out = res;
    else
        json_decref(res);
    if (msg)
        *msg = err;
    else
        free(err);
    lh_free(f.vm);
    return st;
}

static void expect_failure(const char *body, lh_status want, const char *needle)
{
    char src[2048];
    snprintf(src, sizeof src, "return { f = function(ctx)\n%s\nend }", body);
    char *msg = NULL;
    lh_status st = call(src, NULL, NULL, &msg);
    if (st != want || msg == NULL || strstr(msg, needle) == NULL)
        fprintf(stderr, "body: %s\nstatus %s (want %s)\nmessage: %s\nwant substring: %s\n", body, lh_status_name(st),
                lh_status_name(want), msg ? msg : "(none)", needle);
    assert_int_equal(st, want);
    assert_non_null(msg);
    assert_non_null(strstr(msg, needle));
    free(msg);
}

static void expect_result(const char *body, const char *want_json)
{
    char src[2048];
    snprintf(src, sizeof src, "return { f = function(ctx)\n%s\nend }", body);
    json_t *out = NULL;
    char *msg = NULL;
    lh_status st = call(src, NULL, &out, &msg);
    if (st != LH_OK) fprintf(stderr, "body: %s\nerror: %s\n", body, msg);
    assert_int_equal(st, LH_OK);
    json_t *want = json_loads(want_json, JSON_DECODE_ANY, NULL);
    assert_non_null(want);
    if (!json_equal(out, want)) {
        char *got = json_dumps(out, JSON_ENCODE_ANY | JSON_SORT_KEYS);
        fprintf(stderr, "body: %s\ngot:  %s\nwant: %s\n", body, got, want_json);
        free(got);
    }
    assert_true(json_equal(out, want));
    json_decref(out);
    json_decref(want);
    free(msg);
}

/* ---- gateway results and conversions ---- */

static void test_call_roundtrip(void **state)
{
    (void)state;
    json_t *arg = json_pack("{s:s,s:i,s:[i,i],s:{s:b},s:n}", "name", "x", "n", 3, "list", 1, 2, "nested", "ok", 1, "nothing");
    json_t *out = NULL;
    lh_status st = call("return { f = function(ctx) return { name = ctx.name .. '!', n = ctx.n * 2, "
                        "len = #ctx.list, ok = ctx.nested.ok, isnull = ctx.nothing == cjson.null } end }",
                        arg, &out, NULL);
    assert_int_equal(st, LH_OK);
    json_t *want = json_pack("{s:s,s:i,s:i,s:b,s:b}", "name", "x!", "n", 6, "len", 2, "ok", 1, "isnull", 1);
    assert_true(json_equal(out, want));
    json_decref(want);
    json_decref(out);
    json_decref(arg);
}

static void test_results_convert(void **state)
{
    (void)state;
    expect_result("return nil", "null");
    expect_result("return 'a'", "\"a\"");
    expect_result("return 1.5", "1.5");
    expect_result("return 2.0", "2");
    expect_result("return {}", "{}");
    expect_result("return {'a', 'b'}", "[\"a\",\"b\"]");
    expect_result("return {a = {b = {true}}}", "{\"a\":{\"b\":[true]}}");
    expect_result("return cjson.decode('{\"k\":[1,2]}')", "{\"k\":[1,2]}");
    expect_result("return sluice.merge({a=1,b=1},{b=2})", "{\"a\":1,\"b\":2}");
}

static void test_bad_results(void **state)
{
    (void)state;
    expect_failure("return {1, x = 2}", LH_ERROR, "result: table mixes list items and named keys");
    expect_failure("return {f = print}", LH_ERROR, "result.f: a function value cannot leave the script");
    expect_failure("local t = {} t.self = t return t", LH_ERROR, "nested deeper than 64 levels");
    expect_failure("return 0/0", LH_ERROR, "result: number is not finite");
    expect_failure("return {[1]=1,[3]=3}", LH_ERROR, "mixes list items");
}

static void test_error_has_file_line_and_traceback(void **state)
{
    (void)state;
    expect_failure("local x = nil\nreturn x.field", LH_ERROR, "t.lua:3: attempt to index a nil value (local 'x')");
    expect_failure("error('boom')", LH_ERROR, "stack traceback:");
    expect_failure("error('custom message')", LH_ERROR, "t.lua:2: custom message");
}

static void test_non_string_errors(void **state)
{
    (void)state;
    expect_failure("error({code = 1})", LH_ERROR, "(error object is a table value)");
    expect_failure("error(nil)", LH_ERROR, "(error object is a nil value)");
    /* a __tostring that loops must not run: the message names the type only */
    expect_failure("error(setmetatable({}, {__tostring = function() while true do end end}))", LH_ERROR,
                 "(error object is a table value)");
}

static void test_load_errors(void **state)
{
    (void)state;
    lh_vm *vm = lh_new(NULL, NULL);
    json_t *decl = NULL;
    char *err = NULL;
    assert_int_equal(lh_load(vm, "bad.lua", "return {", 8, NULL, &decl, &err), LH_ERROR);
    assert_non_null(strstr(err, "bad.lua:1:"));
    free(err);
    err = NULL;
    assert_int_equal(lh_load(vm, "num.lua", "return 42", 9, "dag", &decl, &err), LH_ERROR);
    assert_string_equal(err, "num.lua: the script must return its workflow table or set the global 'dag'");
    free(err);
    err = NULL;
    assert_int_equal(lh_load(vm, "g.lua", "dag = { name = 'x', f = function() end }", 40, "dag", &decl, &err), LH_OK);
    assert_string_equal(json_string_value(json_object_get(decl, "name")), "x");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(decl, "f"), "$line")), 1);
    json_decref(decl);
    int line = 0;
    assert_int_equal(lh_ref_global(vm, "no_such_fn", &line), 0);
    const char *src = "function g1()\n return 7\nend\nreturn {}";
    assert_int_equal(lh_load(vm, "h.lua", src, strlen(src), NULL, &decl, &err), LH_OK);
    json_decref(decl);
    int ref = lh_ref_global(vm, "g1", &line);
    assert_true(ref > 0);
    assert_int_equal(line, 1);
    json_t *out = NULL;
    assert_int_equal(lh_call(vm, ref, NULL, &out, &err), LH_OK);
    assert_int_equal(json_integer_value(out), 7);
    json_decref(out);
    /* library functions are not workflow functions */
    assert_int_equal(lh_ref_global(vm, "print", NULL), 0);
    lh_free(vm);
}

/* ---- sandbox: one test per escape attempt ---- */

static void test_no_io(void **state)
{
    (void)state;
    expect_failure("return io.open('/etc/passwd')", LH_ERROR, "attempt to index a nil value (global 'io')");
}

static void test_no_os_execute(void **state)
{
    (void)state;
    expect_failure("return os.execute('true')", LH_ERROR, "attempt to call a nil value (field 'execute')");
    expect_failure("return os.getenv('HOME')", LH_ERROR, "attempt to call a nil value (field 'getenv')");
    expect_failure("return os.remove('/tmp/x')", LH_ERROR, "attempt to call a nil value (field 'remove')");
    expect_result("return type(os.time()) == 'number' and type(os.clock()) == 'number' and os.date('!%Y', 0)", "\"1970\"");
}

static void test_no_require(void **state)
{
    (void)state;
    expect_failure("return require('os')", LH_ERROR, "attempt to call a nil value (global 'require')");
    expect_failure("return package.loadlib('libc.so.6', 'system')", LH_ERROR, "global 'package'");
}

static void test_no_dofile_loadfile(void **state)
{
    (void)state;
    expect_failure("return dofile('/etc/passwd')", LH_ERROR, "global 'dofile'");
    expect_failure("return loadfile('/etc/passwd')", LH_ERROR, "global 'loadfile'");
}

static void test_no_binary_chunks(void **state)
{
    (void)state;
    expect_failure("return string.dump(function() end)", LH_ERROR, "field 'dump'");
    /* a binary chunk (ESC 'Lua' header) is refused even when the mode asks for it */
    expect_result("local f, err = load('\\27Lua\\84\\0', 'x', 'b') return {f == nil, err}",
                 "[true, \"attempt to load a binary chunk (mode is 't')\"]");
    expect_result("local f = load('return 1 + 1') return f()", "2");
}

static void test_load_gets_workflow_env(void **state)
{
    (void)state;
    /* text chunks see the workflow's globals, not the host's */
    expect_result("secret = 5 local f = load('return secret') return f()", "5");
}

static void test_no_debug(void **state)
{
    (void)state;
    expect_failure("return debug.sethook()", LH_ERROR, "global 'debug'");
    expect_failure("return collectgarbage('stop')", LH_ERROR, "global 'collectgarbage'");
}

static void test_library_tables_frozen(void **state)
{
    (void)state;
    expect_failure("string.rep = nil", LH_ERROR, "attempt to modify read-only table (field 'rep')");
    expect_failure("math.pi = 3", LH_ERROR, "attempt to modify read-only table (field 'pi')");
    expect_failure("cjson.encode = print", LH_ERROR, "read-only table");
    expect_failure("sluice.merge = nil", LH_ERROR, "read-only table");
    expect_failure("setmetatable(string, {})", LH_ERROR, "cannot change a protected metatable");
    expect_failure("rawset(string, 'rep', 1)", LH_ERROR, "global 'rawset'");
    expect_result("return getmetatable('').__index == nil and getmetatable('')", "\"locked\"");
}

static void test_rewriting_globals_stays_local(void **state)
{
    (void)state;
    /* a fresh VM still has the real ones */
    expect_result("return type(print) .. type(string.format)", "\"functionfunction\"");
    /* assigning a global shadows it in the workflow's own environment; the host and other VMs are untouched */
    expect_result("print = 5; string = 'x'; return {type(print), string}", "[\"number\", \"x\"]");
    expect_failure("setmetatable(_G, nil)", LH_ERROR, "cannot change a protected metatable");
    expect_result("return tostring(type(_G.string.format))", "\"function\"");
}

static void test_no_gc_metamethods(void **state)
{
    (void)state;
    expect_failure("setmetatable({}, {__gc = function() while true do end end})", LH_ERROR,
                 "__gc metamethods are not allowed in workflows");
}

static void test_infinite_loop(void **state)
{
    (void)state;
    expect_failure("while true do end", LH_TIMEOUT, "script budget exceeded");
}

static void test_infinite_loop_inside_pcall(void **state)
{
    (void)state;
    expect_failure("while true do pcall(function() while true do end end) end", LH_TIMEOUT, "script budget exceeded");
    expect_failure("local ok = pcall(function() while true do end end) return ok", LH_TIMEOUT, "script budget exceeded");
    expect_failure("while true do xpcall(function() while true do end end, function(e) return e end) end", LH_TIMEOUT,
                 "script budget exceeded");
    /* the message handler itself looping */
    expect_failure("xpcall(error, function() while true do end end)", LH_TIMEOUT, "script budget exceeded");
}

static void test_time_limit(void **state)
{
    (void)state;
    /* a slow but instruction-light loop: string building stresses time, not the instruction count */
    lh_limits lim = {.mem_limit = 64u << 20, .instr_limit = 1000000000000ull, .time_limit = 0.05};
    lh_vm *vm = lh_new(&lim, NULL);
    json_t *decl = NULL;
    const char *src = "return { f = function() local x = 0 while true do x = x + 1 end end }";
    assert_int_equal(lh_load(vm, "t.lua", src, strlen(src), NULL, &decl, NULL), LH_OK);
    int ref = (int)json_integer_value(json_object_get(json_object_get(decl, "f"), "$fn"));
    json_decref(decl);
    json_t *out = NULL;
    char *err = NULL;
    assert_int_equal(lh_call(vm, ref, NULL, &out, &err), LH_TIMEOUT);
    assert_non_null(strstr(err, "ran longer than 0.05 s"));
    free(err);
    /* the VM stays usable after a kill */
    const char *src2 = "return { f = function() return 'alive' end }";
    assert_int_equal(lh_load(vm, "t2.lua", src2, strlen(src2), NULL, &decl, NULL), LH_OK);
    ref = (int)json_integer_value(json_object_get(json_object_get(decl, "f"), "$fn"));
    json_decref(decl);
    assert_int_equal(lh_call(vm, ref, NULL, &out, NULL), LH_OK);
    assert_string_equal(json_string_value(out), "alive");
    json_decref(out);
    lh_free(vm);
}

static void test_huge_string_rep(void **state)
{
    (void)state;
    expect_failure("return string.rep('x', 1 << 40)", LH_ERROR, "resulting string too large");
    expect_failure("return ('x'):rep(100000000)", LH_NOMEM, "workflow memory limit is 8388608 bytes");
    /* caught by pcall, the loop still ends on the instruction budget */
    expect_failure("while true do pcall(string.rep, 'x', 1 << 30) end", LH_TIMEOUT, "script budget exceeded");
}

static void test_table_growth(void **state)
{
    (void)state;
    expect_failure("local t = {} for i = 1, 1e9 do t[i] = i end", LH_NOMEM, "not enough memory");
}

static void test_deep_recursion(void **state)
{
    (void)state;
    /* with an 8 MiB cap the Lua stack hits the memory limit before Lua's own stack limit */
    expect_failure("local function r(n) return 1 + r(n + 1) end return r(1)", LH_NOMEM, "not enough memory");
    /* deep recursion through C (string.gsub callbacks) */
    expect_failure("local function r(s) return (s:gsub('.', r)) end return r('ab')", LH_ERROR, "stack overflow");
}

static void test_no_coroutines(void **state)
{
    (void)state;
    expect_failure("return coroutine.create(print)", LH_ERROR, "global 'coroutine'");
}

static void test_memory_accounting_returns(void **state)
{
    (void)state;
    fx f = {0};
    assert_int_equal(setup_src(&f, "return { f = function() local t = {} for i = 1, 1e9 do t[i] = i end end }"), 0);
    size_t before = lh_mem_used(f.vm);
    json_t *out = NULL;
    assert_int_equal(lh_call(f.vm, f.ref, NULL, &out, NULL), LH_NOMEM);
    /* the failed call's garbage is collected: usage is back near where it was */
    assert_true(lh_mem_used(f.vm) < before + (256u << 10));
    lh_free(f.vm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_roundtrip),
        cmocka_unit_test(test_results_convert),
        cmocka_unit_test(test_bad_results),
        cmocka_unit_test(test_error_has_file_line_and_traceback),
        cmocka_unit_test(test_non_string_errors),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_no_io),
        cmocka_unit_test(test_no_os_execute),
        cmocka_unit_test(test_no_require),
        cmocka_unit_test(test_no_dofile_loadfile),
        cmocka_unit_test(test_no_binary_chunks),
        cmocka_unit_test(test_load_gets_workflow_env),
        cmocka_unit_test(test_no_debug),
        cmocka_unit_test(test_library_tables_frozen),
        cmocka_unit_test(test_rewriting_globals_stays_local),
        cmocka_unit_test(test_no_gc_metamethods),
        cmocka_unit_test(test_infinite_loop),
        cmocka_unit_test(test_infinite_loop_inside_pcall),
        cmocka_unit_test(test_time_limit),
        cmocka_unit_test(test_huge_string_rep),
        cmocka_unit_test(test_table_growth),
        cmocka_unit_test(test_deep_recursion),
        cmocka_unit_test(test_no_coroutines),
        cmocka_unit_test(test_memory_accounting_returns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
