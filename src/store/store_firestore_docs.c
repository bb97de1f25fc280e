/* store_firestore_docs: document ids and Firestore's typed values for the Firestore backend: plain JSON objects
 * (strings, integers, booleans) to and from `fields`, and the filters of structured queries.
 * Uses: jansson. Must not: send requests or keep state. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "store_firestore.h"
#include "util.h"

static int id_plain(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

char *fs_id(const char *key)
{
    size_t n = strlen(key), len = 0;
    for (size_t i = 0; i < n; i++) len += id_plain((unsigned char)key[i]) ? 1 : 3;
    char *out = xmalloc(len + 1), *p = out;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (id_plain(c)) *p++ = (char)c;
        else p += sprintf(p, "_%02X", c);
    }
    *p = '\0';
    return out;
}

char *fs_id2(const char *a, const char *b)
{
    char *x = fs_id(a), *y = fs_id(b), *out = util_printf("%s~%s", x, y);
    free(x);
    free(y);
    return out;
}

json_t *fs_value(const json_t *v)
{
    if (json_is_string(v)) return json_pack("{s:O}", "stringValue", v);
    if (json_is_integer(v)) {
        char buf[32];
        snprintf(buf, sizeof buf, "%" PRId64, (int64_t)json_integer_value(v));
        return json_pack("{s:s}", "integerValue", buf);
    }
    if (json_is_boolean(v)) return json_pack("{s:b}", "booleanValue", json_is_true(v));
    if (json_is_real(v)) return json_pack("{s:f}", "doubleValue", json_real_value(v));
    return json_pack("{s:n}", "nullValue");
}

json_t *fs_fields_encode(const json_t *doc)
{
    json_t *fields = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)doc, k, v) {
        if (json_is_null(v) || k[0] == '_') continue;
        json_object_set_new(fields, k, fs_value(v));
    }
    return fields;
}

json_t *fs_fields_decode(const json_t *fields)
{
    json_t *doc = json_object();
    const char *k;
    json_t *tv;
    json_object_foreach((json_t *)fields, k, tv) {
        json_t *x;
        if ((x = json_object_get(tv, "stringValue")) != NULL) json_object_set(doc, k, x);
        else if ((x = json_object_get(tv, "integerValue")) != NULL)
            json_object_set_new(doc, k, json_integer(json_is_string(x) ? strtoll(json_string_value(x), NULL, 10)
                                                                       : json_integer_value(x)));
        else if ((x = json_object_get(tv, "booleanValue")) != NULL) json_object_set(doc, k, x);
        else if ((x = json_object_get(tv, "doubleValue")) != NULL) json_object_set(doc, k, x);
    }
    return doc;
}

const char *fs_str(const json_t *doc, const char *key) { return json_string_value(json_object_get(doc, key)); }

int64_t fs_int(const json_t *doc, const char *key) { return (int64_t)json_integer_value(json_object_get(doc, key)); }

void fs_set_str(json_t *doc, const char *key, const char *text)
{
    if (text == NULL) json_object_del(doc, key);
    else json_object_set_new(doc, key, json_string(text));
}

void fs_set_int(json_t *doc, const char *key, int64_t v) { json_object_set_new(doc, key, json_integer(v)); }

void fs_set_time(json_t *doc, const char *key, int64_t v)
{
    if (v == 0) json_object_del(doc, key);
    else fs_set_int(doc, key, v);
}

json_t *fs_where(const char *field, const char *op, json_t *plain_value)
{
    json_t *f = json_pack("{s:{s:{s:s},s:s,s:o}}", "fieldFilter", "field", "fieldPath", field, "op", op, "value",
                          fs_value(plain_value));
    json_decref(plain_value);
    return f;
}

json_t *fs_and(json_t *a, json_t *b)
{
    if (a == NULL) return b;
    if (b == NULL) return a;
    return json_pack("{s:{s:s,s:[o,o]}}", "compositeFilter", "op", "AND", "filters", a, b);
}
