/* gcp_names: Dataflow's job-name and label rules and Cloud Storage's bucket-name rules (see gcp_names.h).
 * Uses: jansson. Must not: do I/O or allocate. */
#include "gcp_names.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

int gn_job_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > GN_JOB_NAME_MAX || !islower((unsigned char)name[0])) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!(islower(c) || isdigit(c) || c == '-') || !isascii(c)) return 0;
    }
    return name[n - 1] != '-';
}

static int label_chars_valid(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!isascii(c) || !(islower(c) || isdigit(c) || c == '_' || c == '-')) return 0;
    }
    return 1;
}

int gn_label_key_valid(const char *key)
{
    size_t n = strlen(key);
    return n >= 1 && n <= 63 && islower((unsigned char)key[0]) && isascii((unsigned char)key[0]) &&
           label_chars_valid(key);
}

int gn_label_value_valid(const char *value) { return strlen(value) <= 63 && label_chars_valid(value); }

int gn_labels_check(json_t *labels, char *err, size_t errlen)
{
    if (!json_is_object(labels)) {
        snprintf(err, errlen, "labels must be a table of strings");
        return -1;
    }
    if (json_object_size(labels) > 64) {
        snprintf(err, errlen, "%zu labels: Dataflow allows at most 64", json_object_size(labels));
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(labels, k, v) {
        if (!gn_label_key_valid(k)) {
            snprintf(err, errlen,
                     "label key '%s' is invalid: 1-63 characters, starting with a lowercase letter, "
                     "only lowercase letters, digits, '_' and '-'", k);
            return -1;
        }
        if (!json_is_string(v)) {
            snprintf(err, errlen, "label '%s' must be a string", k);
            return -1;
        }
        if (!gn_label_value_valid(json_string_value(v))) {
            snprintf(err, errlen,
                     "label '%s' has invalid value '%s': at most 63 lowercase letters, digits, '_' and '-'", k,
                     json_string_value(v));
            return -1;
        }
    }
    return 0;
}

/* Cloud Storage's bucket-name rules, as the Cloud Storage documentation gives them. */
const char *gn_bucket_name_problem(const char *b, size_t n)
{
    int dots = 0, digits_and_dots = 1;
    size_t part = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        if (!isascii(c) || !(islower(c) || isdigit(c) || c == '-' || c == '_' || c == '.'))
            return "may only contain lowercase letters, digits, '-', '_' and '.'";
        if (c == '.') {
            if (part == 0 || part > 63) return "has a dot-separated part that is empty or longer than 63 characters";
            dots++;
            part = 0;
        } else {
            part++;
            if (!isdigit(c)) digits_and_dots = 0;
        }
    }
    if (n < 3) return "is shorter than 3 characters";
    if (!isalnum((unsigned char)b[0]) || !isalnum((unsigned char)b[n - 1])) return "must start and end with a letter or digit";
    if (dots == 0 && n > 63) return "is longer than 63 characters (222 with dots)";
    if (n > 222) return "is longer than 222 characters";
    if (part > 63) return "has a dot-separated part that is empty or longer than 63 characters";
    if (dots == 3 && digits_and_dots) return "must not be an IP address";
    if (strncmp(b, "goog", 4) == 0) return "must not start with 'goog'";
    if (memmem(b, n, "google", 6) != NULL || memmem(b, n, "g00gle", 6) != NULL)
        return "must not contain 'google' (or a close misspelling such as 'g00gle')";
    return NULL;
}

int gn_gcs_path_check(const char *path, char *err, size_t errlen)
{
    if (strncmp(path, "gs://", 5) != 0) return 0;
    const char *b = path + 5, *slash = strchr(b, '/');
    size_t n = slash ? (size_t)(slash - b) : strlen(b);
    const char *why = gn_bucket_name_problem(b, n);
    if (why == NULL) return 0;
    snprintf(err, errlen, "bucket name '%.*s' %s", (int)(n > 80 ? 80 : n), b, why);
    return -1;
}
