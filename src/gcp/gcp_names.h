/* gcp_names: Google's naming rules that Sluice checks before anything is sent — Dataflow job names, label keys
 * and values (and a labels object as a whole), Cloud Storage bucket names and the bucket of a gs:// path.
 * Uses: jansson (a labels object). Must not: do I/O, allocate, or know about workflows, steps or runs.
 * Pure: each answer depends on its arguments only. */
#ifndef SLUICE_GCP_NAMES_H
#define SLUICE_GCP_NAMES_H
#include <jansson.h>
#include <stddef.h>

#define GN_JOB_NAME_MAX 1024 /* Dataflow's longest job name */

/* Dataflow's job-name and label rules. Each returns 1 when valid. */
int gn_job_name_valid(const char *name);
int gn_label_key_valid(const char *key);
int gn_label_value_valid(const char *value);
/* Checks a labels object; on failure returns -1 and writes a message into err. */
int gn_labels_check(json_t *labels, char *err, size_t errlen);
/* Cloud Storage's bucket-name rules for the n characters at b: NULL when valid, else why not (static text, to
 * follow "bucket name 'x' "). 3-63 characters of [a-z0-9_.-] starting and ending with a letter or digit; with
 * dots up to 222, each dot-separated part 1-63; not an IP address; not starting with "goog"; no "google". */
const char *gn_bucket_name_problem(const char *b, size_t n);
/* 0 for a gs:// path whose bucket name follows those rules (or a string that is not a gs:// path); else -1 with
 * "bucket name '...' <why>" in err. */
int gn_gcs_path_check(const char *path, char *err, size_t errlen);

#endif
