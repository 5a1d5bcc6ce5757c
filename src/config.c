// config.c: loads a libconfig file plus `--set key=value` overrides into a validated Config, and
// writes a Config back as libconfig text (see config.h).
//
// Every per-key fact (type, default, range, Config field) lives in the schema table of
// config_schema.c; this file only knows the key types. The same function checks and stores a value
// whether it comes from a file or from --set, so both give the same reasons:
//   FILE:LINE: KEY: unknown key (did you mean KEY?)
//   FILE:LINE: KEY: expected an integer, got a string
//   FILE:LINE: KEY: 5 is out of range (0, 1]
//   FILE:LINE: KEY: "foo" is not one of "llmc", "megatron", ...
//   --set KEY: <any of the reasons above>
#include "config.h"
#include "config_schema.h"
#include "config_include.h"
#include "regular_file.h"
#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>
#include <sys/stat.h>

#define KEY_LEN 256        // longest dotted key; longer ones are unknown anyway
#define NUM_LEN 32         // a formatted number
#define FILE_LEN (2 * CFG_PATH_LEN + 2)    // "DIR/FILE" of an included file
#define WHERE_LEN (FILE_LEN + 16)           // "DIR/FILE:LINE: "
#define MAX_DEPTH 8        // group nesting written by config_write
#define DOC_COLUMN 44      // config_write_text aligns the doc comments here

// ---------------------------------------------------------------------------------------------
// Formatting

// The shortest %.*g text that strtod reads back as exactly v: 0.1 is written "0.1", not
// 0.10000000000000001, and still re-reads bit for bit.
static void format_double(char *buf, size_t n, double v) {
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

// A float literal libconfig reads as a float: it needs a '.' or an exponent ("1" would be an int).
static void format_float_literal(char *buf, size_t n, double v) {
    format_double(buf, n, v);
    if (!strpbrk(buf, ".eEn")) strncat(buf, ".0", n - strlen(buf) - 1);
}

static void format_range(const ConfigKey *k, char *buf, size_t n) {
    if (k->type == KEY_FLOAT) {
        char lo[NUM_LEN], hi[NUM_LEN];
        format_double(lo, sizeof lo, k->flo);
        format_double(hi, sizeof hi, k->fhi);
        int open_lo = k->ends == RANGE_OPEN_LO || k->ends == RANGE_OPEN;
        int open_hi = k->ends == RANGE_OPEN_HI || k->ends == RANGE_OPEN;
        snprintf(buf, n, "%c%s, %s%c", open_lo ? '(' : '[', lo, hi, open_hi ? ')' : ']');
    } else {
        snprintf(buf, n, "[%lld, %lld]", k->ilo, k->ihi);
    }
}

// A libconfig string literal: quotes, with backslash escapes for what libconfig unescapes.
static void write_quoted(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\t': fputs("\\t", f); break;
        case '\r': fputs("\\r", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (*p < 0x20) fprintf(f, "\\x%02x", *p);
            else fputc(*p, f);
        }
    }
    fputc('"', f);
}

// "got ..." in type errors.
static const char *type_name(int config_type) {
    switch (config_type) {
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64: return "an integer";
    case CONFIG_TYPE_FLOAT: return "a float";
    case CONFIG_TYPE_STRING: return "a string";
    case CONFIG_TYPE_BOOL: return "a boolean";
    case CONFIG_TYPE_ARRAY:
    case CONFIG_TYPE_LIST: return "a list";
    case CONFIG_TYPE_GROUP: return "a group";
    default: return "nothing";
    }
}

// "expected ..." in type errors.
static const char *expected_name(KeyType t) {
    switch (t) {
    case KEY_INT:
    case KEY_LONG:
    case KEY_U64: return "an integer";
    case KEY_FLOAT: return "a number";
    case KEY_BOOL: return "a boolean";
    case KEY_CHOICE:
    case KEY_CHOICE_INDEX:
    case KEY_PATH: return "a string";
    case KEY_INT_LIST: return "a list of integers";
    case KEY_BLEND: return "a list of (weight, \"path\", \"kind\") lists";
    }
    return "?";
}

// ---------------------------------------------------------------------------------------------
// Schema look-ups and "did you mean"

// True when `key` names a group of the schema ("model", "data.logic").
static int is_group(const char *key) {
    size_t n = strlen(key);
    for (int i = 0; i < config_schema_len; i++) {
        if (strncmp(config_schema[i].key, key, n) == 0 && config_schema[i].key[n] == '.') return 1;
    }
    return 0;
}

// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
// adjacent characters each count one (so the typo n_layre is 1 away from n_layer).
static int edit_distance(const char *a, const char *b) {
    int n = (int)strlen(a), m = (int)strlen(b);
    if (n >= KEY_LEN || m >= KEY_LEN) return INT_MAX;
    int prev2[KEY_LEN] = {0}, prev[KEY_LEN], cur[KEY_LEN];
    for (int j = 0; j <= m; j++) prev[j] = j;
    for (int i = 1; i <= n; i++) {
        cur[0] = i;
        for (int j = 1; j <= m; j++) {
            int best = prev[j - 1] + (a[i - 1] != b[j - 1]);
            if (prev[j] + 1 < best) best = prev[j] + 1;
            if (cur[j - 1] + 1 < best) best = cur[j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && prev2[j - 2] + 1 < best) {
                best = prev2[j - 2] + 1;
            }
            cur[j] = best;
        }
        memcpy(prev2, prev, sizeof prev);
        memcpy(prev, cur, sizeof cur);
    }
    return prev[m];
}

// Writes " (did you mean KEY?)" into out, or "" when nothing is close: the nearest key or group
// within edit distance 2, else a key with the same last name in another group (train.n_layer ->
// model.n_layer).
static void suggest(const char *unknown, char *out, size_t n) {
    char best[KEY_LEN] = "";
    int best_d = 3;
    for (int i = 0; i < config_schema_len && best_d > 0; i++) {
        const char *key = config_schema[i].key;
        int d = edit_distance(unknown, key);
        if (d < best_d) { best_d = d; snprintf(best, sizeof best, "%s", key); }
        // Its groups too: "modle" -> "model", "data.logik" -> "data.logic".
        for (const char *dot = strchr(key, '.'); dot; dot = strchr(dot + 1, '.')) {
            char group[KEY_LEN];
            snprintf(group, sizeof group, "%.*s", (int)(dot - key), key);
            d = edit_distance(unknown, group);
            if (d < best_d) { best_d = d; snprintf(best, sizeof best, "%s", group); }
        }
    }
    if (!best[0]) {
        const char *dot = strrchr(unknown, '.');
        const char *leaf = dot ? dot + 1 : unknown;
        for (int i = 0; i < config_schema_len; i++) {
            const char *kdot = strrchr(config_schema[i].key, '.');
            if (kdot && strcmp(kdot + 1, leaf) == 0) { snprintf(best, sizeof best, "%s", config_schema[i].key); break; }
        }
    }
    if (best[0]) snprintf(out, n, " (did you mean %s?)", best);
    else if (n) out[0] = '\0';
}

// ---------------------------------------------------------------------------------------------
// Checking and storing one value

static void *field_of(Config *cfg, const ConfigKey *k) { return (char *)cfg + k->offset; }
static const void *cfield_of(const Config *cfg, const ConfigKey *k) { return (const char *)cfg + k->offset; }

// Integer-valued keys (the FIELD check in config_schema.c guarantees the field's C type).
static void store_integer(Config *cfg, const ConfigKey *k, long long v) {
    void *p = field_of(cfg, k);
    switch (k->type) {
    case KEY_LONG: *(long *)p = (long)v; break;
    case KEY_U64: *(uint64_t *)p = (uint64_t)v; break;
    default: *(int *)p = (int)v; break;   // KEY_INT, KEY_BOOL, KEY_CHOICE_INDEX (an int-sized enum)
    }
}

static long long load_integer(const Config *cfg, const ConfigKey *k) {
    const void *p = cfield_of(cfg, k);
    switch (k->type) {
    case KEY_LONG: return *(const long *)p;
    case KEY_U64: return (long long)*(const uint64_t *)p;
    default: return *(const int *)p;
    }
}

// Zero-fills the whole array so that two configs with the same strings compare equal with memcmp.
static void store_string(Config *cfg, const ConfigKey *k, const char *s) {
    char *dst = field_of(cfg, k);
    memset(dst, 0, k->size);
    memcpy(dst, s, strlen(s));   // the caller checked strlen(s) < k->size
}

static void store_list(Config *cfg, const ConfigKey *k, const int *v, int n) {
    int *dst = field_of(cfg, k);
    memset(dst, 0, k->size);
    if (n > 0) memcpy(dst, v, (size_t)n * sizeof(int));
    *(int *)((char *)cfg + k->count_offset) = n;
}

static int float_in_range(const ConfigKey *k, double x) {
    int open_lo = k->ends == RANGE_OPEN_LO || k->ends == RANGE_OPEN;
    int open_hi = k->ends == RANGE_OPEN_HI || k->ends == RANGE_OPEN;
    int lo_ok = open_lo ? x > k->flo : x >= k->flo;
    int hi_ok = open_hi ? x < k->fhi : x <= k->fhi;
    return lo_ok && hi_ok;   // NaN fails both
}

static int choice_index(const ConfigKey *k, const char *s) {
    for (int i = 0; k->choices[i]; i++) {
        if (strcmp(k->choices[i], s) == 0) return i;
    }
    return -1;
}

static int range_error(Error *err, const char *where, const char *key, const char *value, const ConfigKey *k) {
    char range[2 * NUM_LEN + 8];
    format_range(k, range, sizeof range);
    return error_set(err, "%s%s: %s is out of range %s", where, key, value, range);
}

// libconfig 1.5 reads an integer written without an L suffix as 32 bits and wraps a larger one
// silently (`steps = 4294967298;` became 2). The literal as written in the file is read again
// here, so that every integer key is checked in 64 bits. Settings from --set or without a source
// line keep libconfig's value (their text was built in 64 bits already).
static void integer_as_written(const config_setting_t *s, long long *v) {
    const char *file = config_setting_source_file(s), *name = config_setting_name(s);
    unsigned int line = config_setting_source_line(s);
    if (!file || !name || line == 0) return;
    FILE *f = fopen(file, "r");
    if (!f) return;
    char buf[4096];
    for (unsigned int n = 1; fgets(buf, sizeof buf, f); n++) {
        if (n != line) continue;
        // `name` as a whole word, then `=` or `:`, then the literal.
        size_t len = strlen(name);
        for (char *p = strstr(buf, name); p; p = strstr(p + 1, name)) {
            int word = (p == buf || !(isalnum((unsigned char)p[-1]) || p[-1] == '_')) &&
                       !(isalnum((unsigned char)p[len]) || p[len] == '_');
            if (!word) continue;
            char *q = p + len;
            while (*q == ' ' || *q == '\t') q++;
            if (*q != '=' && *q != ':') continue;
            q++;
            errno = 0;
            char *end;
            long long x = strtoll(q, &end, 0);
            if (end != q && errno == 0) *v = x;
            break;
        }
        break;
    }
    fclose(f);
}

// data.blend: a list of (weight, "path", "kind") entries (Megatron's data blend, with the format
// of each source named because a blend may mix llm.c shards and Megatron datasets). An empty list
// is the default. Weights must be positive and finite; they are normalised where they are used.
static int apply_blend(const ConfigKey *k, const config_setting_t *s, Config *cfg, const char *where, Error *err) {
    int cap = (int)(k->size / sizeof(DataBlendSource)), n = config_setting_length(s);
    if (n > cap) return error_set(err, "%s%s: at most %d sources, got %d", where, k->key, cap, n);
    DataBlendSource *dst = field_of(cfg, k);
    DataBlendSource v[CFG_MAX_BLEND];
    memset(v, 0, sizeof v);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        int et = config_setting_type(e);
        const config_setting_t *w = NULL, *path = NULL, *kind = NULL;
        if ((et == CONFIG_TYPE_LIST || et == CONFIG_TYPE_ARRAY) && config_setting_length(e) == 3) {
            w = config_setting_get_elem(e, 0);
            path = config_setting_get_elem(e, 1);
            kind = config_setting_get_elem(e, 2);
        }
        if (!w || !config_setting_is_number(w) || config_setting_type(path) != CONFIG_TYPE_STRING ||
            config_setting_type(kind) != CONFIG_TYPE_STRING)
            return error_set(err, "%s%s[%d]: expected (weight, \"path\", \"kind\")", where, k->key, i);
        double x = config_setting_type(w) == CONFIG_TYPE_FLOAT ? config_setting_get_float(w) : (double)config_setting_get_int64(w);
        if (!(x > 0 && x <= 1e15)) {
            char num[NUM_LEN];
            format_double(num, sizeof num, x);
            return error_set(err, "%s%s[%d]: weight %s must be > 0", where, k->key, i, num);
        }
        const char *p = config_setting_get_string(path), *kd = config_setting_get_string(kind);
        if (!p[0]) return error_set(err, "%s%s[%d]: empty path", where, k->key, i);
        if (strlen(p) >= sizeof v[i].path) return error_set(err, "%s%s[%d]: path longer than %zu characters", where, k->key, i, sizeof v[i].path - 1);
        if (choice_index(k, kd) < 0)
            return error_set(err, "%s%s[%d]: \"%s\" is not one of \"llmc\", \"megatron\", \"text\"", where, k->key, i, kd);
        v[i].weight = x;
        memcpy(v[i].path, p, strlen(p));
        memcpy(v[i].kind, kd, strlen(kd));
    }
    memcpy(dst, v, (size_t)cap * sizeof *dst);   // zero-filled tail: equal configs compare equal with memcmp
    *(int *)((char *)cfg + k->count_offset) = n;
    return 0;
}

// Checks one libconfig setting against its schema row and stores it into cfg. `where` prefixes
// the message: "FILE:LINE: " for a file, "--set " for an override.
static int apply_setting(const ConfigKey *k, const config_setting_t *s, Config *cfg, const char *where, Error *err) {
    int t = config_setting_type(s);
    char num[NUM_LEN];
    switch (k->type) {
    case KEY_INT:
    case KEY_LONG:
    case KEY_U64: {
        if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) break;
        long long v = config_setting_get_int64(s);
        if (t == CONFIG_TYPE_INT) integer_as_written(s, &v);
        if (v < k->ilo || v > k->ihi) {
            snprintf(num, sizeof num, "%lld", v);
            return range_error(err, where, k->key, num, k);
        }
        store_integer(cfg, k, v);
        return 0;
    }
    case KEY_FLOAT: {
        // An integer is a fine float (`lr = 1`): the AUTOCONVERT reading.
        if (!config_setting_is_number(s)) break;
        double v = t == CONFIG_TYPE_FLOAT ? config_setting_get_float(s) : (double)config_setting_get_int64(s);
        if (!float_in_range(k, v)) {
            format_double(num, sizeof num, v);
            return range_error(err, where, k->key, num, k);
        }
        *(double *)field_of(cfg, k) = v;
        return 0;
    }
    case KEY_BOOL:
        if (t != CONFIG_TYPE_BOOL) break;
        store_integer(cfg, k, config_setting_get_bool(s) ? 1 : 0);
        return 0;
    case KEY_CHOICE:
    case KEY_CHOICE_INDEX: {
        if (t != CONFIG_TYPE_STRING) break;
        const char *v = config_setting_get_string(s);
        int idx = choice_index(k, v);
        if (idx < 0) {
            char allowed[256] = "";
            for (int i = 0; k->choices[i]; i++) {
                size_t len = strlen(allowed);
                snprintf(allowed + len, sizeof allowed - len, "%s\"%s\"", i ? ", " : "", k->choices[i]);
            }
            return error_set(err, "%s%s: \"%s\" is not one of %s", where, k->key, v, allowed);
        }
        if (k->type == KEY_CHOICE) store_string(cfg, k, k->choices[idx]);
        else store_integer(cfg, k, idx);
        return 0;
    }
    case KEY_PATH: {
        if (t != CONFIG_TYPE_STRING) break;
        const char *v = config_setting_get_string(s);
        if (strlen(v) >= k->size) {
            return error_set(err, "%s%s: longer than %zu characters", where, k->key, k->size - 1);
        }
        store_string(cfg, k, v);
        return 0;
    }
    case KEY_INT_LIST: {
        if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) break;
        int cap = (int)(k->size / sizeof(int));
        int n = config_setting_length(s);
        int min_n = k->ldef_n == 0 ? 0 : 1;   // a list whose default is empty may be empty ("off")
        if (n < min_n || n > cap) {
            return error_set(err, "%s%s: expected %d to %d values, got %d", where, k->key, min_n, cap, n);
        }
        int v[CFG_MAX_LIST];
        for (int i = 0; i < n; i++) {
            const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
            char key[KEY_LEN];
            snprintf(key, sizeof key, "%s[%d]", k->key, i);
            int et = config_setting_type(e);
            if (et != CONFIG_TYPE_INT && et != CONFIG_TYPE_INT64) {
                return error_set(err, "%s%s: expected an integer, got %s", where, key, type_name(et));
            }
            long long x = config_setting_get_int64(e);
            if (x < k->ilo || x > k->ihi) {
                snprintf(num, sizeof num, "%lld", x);
                return range_error(err, where, key, num, k);
            }
            v[i] = (int)x;
        }
        store_list(cfg, k, v, n);
        return 0;
    }
    case KEY_BLEND:
        if (t != CONFIG_TYPE_LIST && t != CONFIG_TYPE_ARRAY) break;
        return apply_blend(k, s, cfg, where, err);
    }
    return error_set(err, "%s%s: expected %s, got %s", where, k->key, expected_name(k->type), type_name(t));
}

// ---------------------------------------------------------------------------------------------
// Loading

// Where a key's value came from, so that cross-key messages can point at it.
typedef struct {
    int set;             // 0: still the default
    int from_override;
    const char *file;    // libconfig's name of the file (valid while its config_t lives)
    unsigned line;
} Origin;

typedef struct {
    Config cfg;                    // filled in place; copied out only when everything is valid
    const char *path;              // the main file, as given
    char dir[CFG_PATH_LEN];        // its directory: libconfig's include dir
    Origin *origin;                // one per schema row
    Error *err;
} Loader;

// libconfig names an included file as written in `@include`, relative to the include dir; the
// message names the path the user can open.
static const char *display_file(const Loader *L, const char *file, char *buf, size_t n) {
    if (!file || strcmp(file, L->path) == 0) return L->path;
    if (file[0] == '/' || strcmp(L->dir, ".") == 0) return file;
    snprintf(buf, n, "%s/%s", L->dir, file);
    return buf;
}

static void set_dir_of(char *dir, size_t n, const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, n, ".");
    else if (slash == path) snprintf(dir, n, "/");
    else snprintf(dir, n, "%.*s", (int)(slash - path), path);
}

// Walks every setting of a group, recursively: known keys are checked and stored, anything else
// is an error naming the file and line it comes from.
static int load_group(Loader *L, const config_setting_t *group, const char *prefix) {
    int n = config_setting_length(group);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
        char key[KEY_LEN], where[WHERE_LEN], buf[FILE_LEN];
        snprintf(key, sizeof key, "%s%s%s", prefix, prefix[0] ? "." : "", config_setting_name(s));
        const char *file = display_file(L, config_setting_source_file(s), buf, sizeof buf);
        snprintf(where, sizeof where, "%s:%u: ", file, config_setting_source_line(s));

        const ConfigKey *k = config_schema_find(key);
        if (k) {
            if (apply_setting(k, s, &L->cfg, where, L->err)) return -1;
            L->origin[k - config_schema] = (Origin){
                .set = 1, .file = config_setting_source_file(s), .line = config_setting_source_line(s)};
        } else if (is_group(key)) {
            if (!config_setting_is_group(s)) {
                return error_set(L->err, "%s%s: expected a group, got %s", where, key, type_name(config_setting_type(s)));
            }
            if (load_group(L, s, key)) return -1;
        } else {
            char hint[KEY_LEN + 32];
            suggest(key, hint, sizeof hint);
            return error_set(L->err, "%s%s: unknown key%s", where, key, hint);
        }
    }
    return 0;
}

static int read_error(const Loader *L, const config_t *c) {
    if (config_error_type(c) == CONFIG_ERR_FILE_IO) {
        return error_set(L->err, "%s: cannot read: %s", L->path, config_error_text(c));
    }
    char buf[FILE_LEN];
    const char *file = display_file(L, config_error_file(c), buf, sizeof buf);
    return error_set(L->err, "%s:%d: %s", file, config_error_line(c), config_error_text(c));
}

// True for a plain decimal integer literal: libconfig 1.5 silently wraps one that does not fit
// 32 bits unless it carries an L suffix.
static int is_decimal_integer(const char *v) {
    const char *p = v + (*v == '-' || *v == '+');
    if (!*p) return 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') return 0;
    }
    return 1;
}

static void trim_copy(char *dst, size_t n, const char *begin, const char *end) {
    while (begin < end && (*begin == ' ' || *begin == '\t')) begin++;
    while (end > begin && (end[-1] == ' ' || end[-1] == '\t')) end--;
    snprintf(dst, n, "%.*s", (int)(end - begin), begin);
}

// Parses the value of one override with libconfig, as the text `value = <v>;`, and applies it
// with the same checks as a file value. A string key also takes a bare word (--set data.kind=text,
// --set data.train=data/x_*.bin): it is quoted here.
static int apply_override_value(Loader *L, const ConfigKey *k, const char *value) {
    if (!value[0]) return error_set(L->err, "--set %s: missing value (expected key=value)", k->key);
    int is_string_key = k->type == KEY_CHOICE || k->type == KEY_CHOICE_INDEX || k->type == KEY_PATH;
    int needs_l = 0;   // libconfig 1.5 wraps a plain integer past 32 bits unless it carries an L
    if (!is_string_key && is_decimal_integer(value)) {
        errno = 0;
        long long v = strtoll(value, NULL, 10);
        if (errno == ERANGE) return range_error(L->err, "--set ", k->key, value, k);
        needs_l = v > INT_MAX || v < INT_MIN;
    }

    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    CHECK_ALLOC(f);
    fputs("value = ", f);
    if (is_string_key && value[0] != '"') write_quoted(f, value);
    else fprintf(f, "%s%s", value, needs_l ? "L" : "");
    fputs(";\n", f);
    fclose(f);

    config_t c;
    config_init(&c);
    config_set_options(&c, CONFIG_OPTION_AUTOCONVERT);
    int ok = config_read_string(&c, text);
    // Exactly one setting named `value`: `--set train.lr=1; foo = 2` is not a number.
    const config_setting_t *root = config_root_setting(&c);
    ok = ok && config_setting_length(root) == 1 &&
         strcmp(config_setting_name(config_setting_get_elem(root, 0)), "value") == 0;
    int rc = ok ? apply_setting(k, config_setting_get_elem(root, 0), &L->cfg, "--set ", L->err)
                : error_set(L->err, "--set %s: expected %s, got %s", k->key, expected_name(k->type), value);
    config_destroy(&c);
    free(text);
    return rc;
}

// One `key=value` override.
static int apply_override(Loader *L, const char *arg) {
    const char *eq = strchr(arg, '=');
    char key[KEY_LEN];
    if (eq) trim_copy(key, sizeof key, arg, eq);
    if (!eq || !key[0]) return error_set(L->err, "--set %s: expected key=value", arg);

    const ConfigKey *k = config_schema_find(key);
    if (!k) {
        if (is_group(key)) return error_set(L->err, "--set %s: is a group, not a key", key);
        char hint[KEY_LEN + 32];
        suggest(key, hint, sizeof hint);
        return error_set(L->err, "--set %s: unknown key%s", key, hint);
    }
    size_t n = strlen(eq + 1) + 1;
    char *value = xmalloc(n);
    trim_copy(value, n, eq + 1, eq + n);
    int rc = apply_override_value(L, k, value);
    free(value);
    if (rc == 0) L->origin[k - config_schema] = (Origin){.set = 1, .from_override = 1};
    return rc;
}

// A cross-key error names `key` and, when the value was set explicitly, where it was set.
static int cross_error(const Loader *L, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int cross_error(const Loader *L, const char *key, const char *fmt, ...) {
    char reason[512], where[WHERE_LEN] = "", buf[FILE_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    const ConfigKey *k = config_schema_find(key);
    const Origin *o = &L->origin[k - config_schema];
    if (o->from_override) snprintf(where, sizeof where, "--set ");
    else if (o->set) snprintf(where, sizeof where, "%s:%u: ", display_file(L, o->file, buf, sizeof buf), o->line);
    return error_set(L->err, "%s%s: %s", where, key, reason);
}

// Checks that involve several keys, once everything is applied. Checks that depend on the
// topology (dp, pp against micro-batches and layers) belong to the caller that knows it.
static int cross_check(const Loader *L) {
    const Config *c = &L->cfg;
    char a[NUM_LEN], b[NUM_LEN];
    if (c->d_model % c->n_head != 0) {
        return cross_error(L, "model.n_head", "%d does not divide model.d_model (%d)", c->n_head, c->d_model);
    }
    if ((c->steps > 0) == (c->tokens > 0)) {
        format_double(a, sizeof a, c->tokens);
        return cross_error(L, "train.steps", "exactly one of train.steps and train.tokens must be > 0 (steps %ld, tokens %s)",
                           c->steps, a);
    }
    if (c->min_lr > c->lr) {
        format_double(a, sizeof a, c->min_lr);
        format_double(b, sizeof b, c->lr);
        return cross_error(L, "train.min_lr", "%s is greater than train.lr (%s)", a, b);
    }
    if (c->logic_depth_min > c->logic_depth_max) {
        return cross_error(L, "data.logic.depth_min", "%d is greater than data.logic.depth_max (%d)",
                           c->logic_depth_min, c->logic_depth_max);
    }
    if (c->batch_size % c->micro_batch_size != 0) {
        return cross_error(L, "train.batch_size", "%d is not a multiple of train.micro_batch_size (%d)",
                           c->batch_size, c->micro_batch_size);
    }
    if (c->data_blend_n > 0) {
        if (c->data_train[0])
            return cross_error(L, "data.blend", "is set together with data.train (\"%s\"): give the training data one way", c->data_train);
        if (strcmp(c->data_kind, "llmc") && strcmp(c->data_kind, "megatron") && strcmp(c->data_kind, "text"))
            return cross_error(L, "data.blend", "needs data.kind llmc, megatron or text (the format of data.val), not \"%s\"", c->data_kind);
        if (strcmp(c->data_sampling, "epoch"))
            return cross_error(L, "data.blend", "needs data.sampling = \"epoch\" (\"%s\" draws from one source)", c->data_sampling);
    }
    if (c->steps > 0 && c->warmup_steps >= c->steps) {
        return cross_error(L, "train.warmup_steps", "%d must be less than train.steps (%ld)", c->warmup_steps, c->steps);
    }
    return 0;
}

void config_defaults(Config *cfg) {
    memset(cfg, 0, sizeof *cfg);   // padding too: loaded configs compare equal with memcmp
    for (int i = 0; i < config_schema_len; i++) {
        const ConfigKey *k = &config_schema[i];
        switch (k->type) {
        case KEY_FLOAT: *(double *)field_of(cfg, k) = k->fdef; break;
        case KEY_CHOICE:
        case KEY_PATH: store_string(cfg, k, k->sdef); break;
        case KEY_INT_LIST: store_list(cfg, k, k->ldef, k->ldef_n); break;
        case KEY_BLEND: break;   // empty: zeroed above
        default: store_integer(cfg, k, k->idef); break;
        }
    }
}

int config_load(const char *path, const char *const *overrides, int n_overrides, Config *cfg, Error *err) {
    if (!path) return error_set(err, "no config file given");
    Loader L;
    config_defaults(&L.cfg);
    L.path = path;
    L.err = err;
    L.origin = xcalloc((size_t)config_schema_len, sizeof(Origin));
    set_dir_of(L.dir, sizeof L.dir, path);

    // Checked here first: libconfig reports only "file I/O error", reads a directory as empty and
    // blocks for ever on a FIFO; its @include lines fail in its scanner without naming the file.
    const char *why;
    if (regular_file_check(path, &why)) {
        free(L.origin);
        return error_set(err, "%s: cannot open: %s", path, why);
    }
    if (config_check_includes(path, path, L.dir, err)) {
        free(L.origin);
        return -1;
    }

    config_t c;
    config_init(&c);
    config_set_options(&c, CONFIG_OPTION_AUTOCONVERT);
    config_set_include_dir(&c, L.dir);   // `@include "base/x.cfg"` is relative to the main file
    int rc = config_read_file(&c, path) ? load_group(&L, config_root_setting(&c), "") : read_error(&L, &c);
    for (int i = 0; rc == 0 && i < n_overrides; i++) rc = apply_override(&L, overrides[i]);
    if (rc == 0) rc = cross_check(&L);   // before config_destroy: origins point into c
    if (rc == 0) memcpy(cfg, &L.cfg, sizeof *cfg);   // memcpy keeps the zeroed padding
    config_destroy(&c);
    free(L.origin);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Writing

static void write_value(const ConfigKey *k, const Config *cfg, FILE *f) {
    char num[NUM_LEN];
    switch (k->type) {
    case KEY_INT:
        fprintf(f, "%lld", load_integer(cfg, k));
        break;
    case KEY_LONG:
    case KEY_U64: {
        long long v = load_integer(cfg, k);
        fprintf(f, "%lld%s", v, v > INT_MAX || v < INT_MIN ? "L" : "");   // L: libconfig's 64-bit integer
        break;
    }
    case KEY_FLOAT:
        format_float_literal(num, sizeof num, *(const double *)cfield_of(cfg, k));
        fputs(num, f);
        break;
    case KEY_BOOL:
        fputs(load_integer(cfg, k) ? "true" : "false", f);
        break;
    case KEY_CHOICE:
    case KEY_PATH:
        write_quoted(f, cfield_of(cfg, k));
        break;
    case KEY_CHOICE_INDEX: {
        long long idx = load_integer(cfg, k);
        int n = 0;
        while (k->choices[n]) n++;
        write_quoted(f, idx >= 0 && idx < n ? k->choices[idx] : "");
        break;
    }
    case KEY_INT_LIST: {
        const int *v = cfield_of(cfg, k);
        int n = *(const int *)((const char *)cfg + k->count_offset);
        fputc('[', f);
        for (int i = 0; i < n && i < (int)(k->size / sizeof(int)); i++) fprintf(f, "%s%d", i ? ", " : "", v[i]);
        fputc(']', f);
        break;
    }
    case KEY_BLEND: {
        const DataBlendSource *v = cfield_of(cfg, k);
        int n = *(const int *)((const char *)cfg + k->count_offset);
        fputc('(', f);
        for (int i = 0; i < n && i < (int)(k->size / sizeof *v); i++) {
            format_float_literal(num, sizeof num, v[i].weight);
            fprintf(f, "%s(%s, ", i ? ", " : "", num);
            write_quoted(f, v[i].path);
            fputs(", ", f);
            write_quoted(f, v[i].kind);
            fputc(')', f);
        }
        fputc(')', f);
        break;
    }
    }
}

// The groups of a dotted key: every component but the last.
typedef struct {
    const char *name[MAX_DEPTH];
    int len[MAX_DEPTH];
    int n;
} GroupPath;

static GroupPath groups_of(const char *key) {
    GroupPath g = {.n = 0};
    const char *c = key;
    for (const char *dot; (dot = strchr(c, '.')) != NULL && g.n < MAX_DEPTH; c = dot + 1) {
        g.name[g.n] = c;
        g.len[g.n] = (int)(dot - c);
        g.n++;
    }
    return g;
}

void config_write_text(const Config *cfg, FILE *out) {
    fputs("// entrank configuration, fully resolved: every key, defaults included.\n\n", out);
    GroupPath open = {.n = 0};
    for (int i = 0; i < config_schema_len; i++) {
        const ConfigKey *k = &config_schema[i];
        GroupPath g = groups_of(k->key);
        int common = 0;
        while (common < open.n && common < g.n && open.len[common] == g.len[common] &&
               strncmp(open.name[common], g.name[common], (size_t)g.len[common]) == 0) {
            common++;
        }
        for (int d = open.n; d > common; d--) fprintf(out, "%*s};\n", 2 * (d - 1), "");
        if (common == 0 && open.n > 0) fputc('\n', out);
        for (int d = common; d < g.n; d++) fprintf(out, "%*s%.*s = {\n", 2 * d, "", g.len[d], g.name[d]);
        open = g;

        // "name = value;" padded so that the doc comments line up.
        char *line = NULL;
        size_t line_len = 0;
        FILE *f = open_memstream(&line, &line_len);
        CHECK_ALLOC(f);
        const char *dot = strrchr(k->key, '.');
        fprintf(f, "%*s%s = ", 2 * g.n, "", dot ? dot + 1 : k->key);
        write_value(k, cfg, f);
        fputc(';', f);
        fclose(f);
        int pad = DOC_COLUMN - (int)line_len;
        fprintf(out, "%s%*s // %s\n", line, pad > 0 ? pad : 0, "", k->doc);
        free(line);
    }
    for (int d = open.n; d > 0; d--) fprintf(out, "%*s};\n", 2 * (d - 1), "");
}

char *config_to_string(const Config *cfg) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK_ALLOC(f);
    config_write_text(cfg, f);
    fclose(f);
    CHECK_ALLOC(text);
    return text;
}
