/* A small JSON reader for model files (config.json, tokenizer.json, safetensors headers,
 * sharded indexes). Input is untrusted: depth is bounded, every error is ELA_ERR_FORMAT with
 * the line and column, and strings keep their length (they may hold "\u0000"). */
#ifndef ELA_MODEL_JSON_H
#define ELA_MODEL_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "ela.h"

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_kind;

typedef struct json_value json_value;
typedef struct json_member json_member;

struct json_value {
    json_kind kind;
    int boolean;      /* JSON_BOOL */
    double number;    /* JSON_NUMBER */
    const char *str;  /* JSON_STRING: UTF-8, NUL-terminated, `len` bytes before the NUL */
    size_t len;       /* JSON_STRING: bytes; JSON_ARRAY / JSON_OBJECT: element count */
    json_value *items;     /* JSON_ARRAY: [len] */
    json_member *members;  /* JSON_OBJECT: [len], in file order (duplicates kept) */
};

struct json_member {
    const char *key; /* UTF-8, NUL-terminated */
    size_t key_len;
    json_value value;
};

typedef struct json_doc json_doc;

/* Parse `len` bytes. `what` names the file in error messages ("config.json"). */
ela_status json_parse(const char *text, size_t len, const char *what, json_doc **out);
void json_free(json_doc *doc); /* NULL is a no-op */
const json_value *json_root(const json_doc *doc);

/* Member `key` of an object (the last one when repeated); NULL when v is not an object or
 * has no such member. */
const json_value *json_get(const json_value *v, const char *key);
/* Typed lookups of a member: the pointer / value when present with the right kind, else NULL
 * or the fallback. json_int requires an integral number within int64 range. */
const char *json_get_string(const json_value *obj, const char *key);
double json_get_number(const json_value *obj, const char *key, double fallback);
int json_get_int(const json_value *obj, const char *key, int64_t *out); /* 1 found, 0 not */
int json_get_bool(const json_value *obj, const char *key, int fallback);
/* 1 when v is an integral number that fits int64 (stored in *out), else 0. */
int json_as_int(const json_value *v, int64_t *out);

#endif
