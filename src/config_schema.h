// config_schema.h: the schema of the run configuration (private to config.c / config_schema.c).
//
// One row per key: its dotted path, type, default, allowed range and where it lives in Config.
// Loading, validation, defaults and writing are all driven by this one table, so adding a key
// means adding one row (and the Config field), nothing else.
#pragma once
#include <stddef.h>
#include "config.h"

typedef enum {
    KEY_INT,          // int, range [ilo, ihi]
    KEY_LONG,         // long, range [ilo, ihi]; written with an L suffix when it needs 64 bits
    KEY_U64,          // uint64_t, range [ilo, ihi] (libconfig reads signed 64-bit, so at most INT64_MAX)
    KEY_FLOAT,        // double, range flo..fhi with open/closed ends; an integer value is accepted
    KEY_BOOL,         // int, 0 or 1, written true/false
    KEY_CHOICE,       // string out of `choices`, stored in a char array
    KEY_CHOICE_INDEX, // string out of `choices`, stored as its index in an int-sized enum
    KEY_PATH,         // string (may be empty), stored in a char array
    KEY_INT_LIST,     // 1..capacity ints, each in [ilo, ihi]; the count is stored at count_offset
    KEY_BLEND,        // 0..CFG_MAX_BLEND (weight, "path", "kind") lists; the count is stored at count_offset
} KeyType;

// Which ends of a float range are excluded: "[lo, hi]", "(lo, hi]", "[lo, hi)", "(lo, hi)".
typedef enum { RANGE_CLOSED, RANGE_OPEN_LO, RANGE_OPEN_HI, RANGE_OPEN } RangeEnds;

typedef struct {
    const char *key;              // dotted path, e.g. "model.n_layer"
    KeyType type;
    size_t offset;                // offsetof(Config, field)
    size_t size;                  // sizeof the field: string capacity, list capacity * sizeof(int)
    size_t count_offset;          // KEY_INT_LIST: offsetof(Config, count field)
    long long idef;               // default of integer, bool and choice-index keys
    double fdef;                  // default of float keys
    const char *sdef;             // default of string keys
    const int *ldef;              // default of list keys, ldef_n values
    int ldef_n;
    long long ilo, ihi;           // range of integer keys and of list elements
    double flo, fhi;              // range of float keys
    RangeEnds ends;               // which float range ends are open
    const char *const *choices;   // allowed values of choice keys, NULL-terminated
    const char *doc;              // one line, written as a comment by config_write_text
} ConfigKey;

extern const ConfigKey config_schema[];
extern const int config_schema_len;

// The row of a dotted key, or NULL.
const ConfigKey *config_schema_find(const char *key);
