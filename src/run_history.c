// run_history.c: the config a resume changes, logged and kept (see run_history.h).
#include "run_history.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "checkpoint.h"
#include "optimizer.h"
#include "train.h"

// ---- the resolved text as dotted key = value pairs
//
// config_write_text writes one `key = value;` per line inside `group = {` ... `};` blocks, each
// line followed by a `// doc` comment. Comparing these lines (not the Config's bytes) names keys the
// way users write them and shows values in libconfig syntax, and needs no second list of keys.
typedef struct {
    char key[128];
    char *value;
} Entry;

typedef struct {
    Entry *e;
    int n, cap;
} Entries;

static void entries_add(Entries *es, const char *key, const char *value, size_t value_len) {
    if (es->n == es->cap) {
        es->cap = es->cap ? 2 * es->cap : 128;
        Entry *grown = realloc(es->e, sizeof(Entry) * (size_t)es->cap);
        CHECK_ALLOC(grown);
        es->e = grown;
    }
    Entry *x = &es->e[es->n++];
    snprintf(x->key, sizeof x->key, "%s", key);
    x->value = xmalloc(value_len + 1);
    memcpy(x->value, value, value_len);
    x->value[value_len] = 0;
}

static void entries_free(Entries *es) {
    for (int i = 0; i < es->n; i++) free(es->e[i].value);
    free(es->e);
}

// The end of a `key = value;` statement: the first ';' outside quotes.
static const char *statement_end(const char *p) {
    int quoted = 0;
    for (; *p && *p != '\n'; p++) {
        if (*p == '"' && p[-1] != '\\') quoted = !quoted;
        else if (*p == ';' && !quoted) return p;
    }
    return NULL;
}

static void parse_resolved(const char *text, Entries *out) {
    char prefix[160] = "";
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        const char *p = line;
        while (p < line + len && *p == ' ') p++;
        const char *eq = memchr(p, '=', (size_t)(line + len - p));
        if (len > 0 && strncmp(p, "//", 2) && strncmp(p, "};", 2) && eq) {
            const char *k_end = eq;
            while (k_end > p && k_end[-1] == ' ') k_end--;
            char key[128];
            snprintf(key, sizeof key, "%s%.*s", prefix, (int)(k_end - p), p);
            const char *v = eq + 1;
            while (*v == ' ') v++;
            if (*v == '{') {   // a group opens: its keys are prefixed
                snprintf(prefix, sizeof prefix, "%s.", key);
            } else {
                const char *end = statement_end(v);
                if (end) entries_add(out, key, v, (size_t)(end - v));
            }
        } else if (!strncmp(p, "};", 2)) {   // a group closes: drop its last name
            size_t n = strlen(prefix);
            if (n) prefix[n - 1] = 0;
            char *dot = strrchr(prefix, '.');
            if (dot) dot[1] = 0;
            else prefix[0] = 0;
        }
        line += len + (nl ? 1 : 0);
    }
}

static const char *entry_value(const Entries *es, const char *key) {
    for (int i = 0; i < es->n; i++)
        if (!strcmp(es->e[i].key, key)) return es->e[i].value;
    return NULL;
}

// Keys the trainer resolves: listed apart, not as the user's changes.
static int resolved_by_trainer(const char *key) { return !strcmp(key, "train.extend_step") || !strcmp(key, "train.extend_lr"); }

static char *list_changes(const Config *before, const Config *after) {
    char *a = config_to_string(before), *b = config_to_string(after);
    Entries ea = {0}, eb = {0};
    parse_resolved(a, &ea);
    parse_resolved(b, &eb);
    char *lines = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&lines, &len);
    CHECK_ALLOC(f);
    for (int i = 0; i < eb.n; i++) {
        if (resolved_by_trainer(eb.e[i].key)) continue;
        const char *old = entry_value(&ea, eb.e[i].key);
        if (!old) fprintf(f, "  %s: (not in the checkpoint's config) -> %s\n", eb.e[i].key, eb.e[i].value);
        else if (strcmp(old, eb.e[i].value)) fprintf(f, "  %s: %s -> %s\n", eb.e[i].key, old, eb.e[i].value);
    }
    fclose(f);
    entries_free(&ea);
    entries_free(&eb);
    free(a);
    free(b);
    if (len == 0) { free(lines); return NULL; }
    return lines;
}

// ---- the schedule

// Whether two configs give the LR schedule the same inputs (the tail's resolved step and LR apart).
static int same_schedule(const Config *a, const Config *b) {
    return total_steps_of(a) == total_steps_of(b) && a->lr == b->lr && a->min_lr == b->min_lr &&
           a->warmup_steps == b->warmup_steps && !strcmp(a->extend, b->extend);
}

static int load_config_text(const char *text, Config *cfg, char *why, size_t why_len) {
    char tmp[64];
    snprintf(tmp, sizeof tmp, "/tmp/entrank-resume-config-XXXXXX");
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0) { close(fd); unlink(tmp); }
        snprintf(why, why_len, "cannot write a temporary file: %s", strerror(errno));
        return -1;
    }
    int bad = fputs(text, f) < 0;
    bad = fclose(f) != 0 || bad;
    Error err = {{0}};
    int rc = bad ? -1 : config_load(tmp, NULL, 0, cfg, &err);
    unlink(tmp);
    // The config's message may be longer than `why`: cut, as the precision says (gcc's truncation check).
    if (rc) snprintf(why, why_len, "%.*s", (int)why_len - 1, bad ? "cannot write a temporary file" : err.msg);
    return rc;
}

int run_history_resume(Config *cfg, const char *checkpoint, long step, RunResume *out) {
    memset(out, 0, sizeof *out);
    out->step = step;
    Error err = {{0}};
    char *text = checkpoint_read_config(checkpoint, &err);
    static Config before;   // large (paths): off the stack
    if (!text) {
        snprintf(out->why, sizeof out->why, "%.*s", (int)sizeof out->why - 1, err.msg);
        return 0;
    }
    int rc = load_config_text(text, &before, out->why, sizeof out->why);
    free(text);
    if (rc) return 0;
    out->readable = 1;
    out->changes = list_changes(&before, cfg);
    out->lr_old = lr_at_step(&before, step, total_steps_of(&before));
    out->schedule_changed = !same_schedule(&before, cfg);
    if (!out->schedule_changed) {
        // A requeue or a change elsewhere: the schedule continues as it was, tail included.
        cfg->extend_step = before.extend_step;
        cfg->extend_lr = before.extend_lr;
    } else if (strcmp(cfg->extend, "none")) {
        cfg->extend_step = step;
        cfg->extend_lr = out->lr_old;
    } else {
        cfg->extend_step = 0;
        cfg->extend_lr = 0;
    }
    out->lr_new = lr_at_step(cfg, step, total_steps_of(cfg));
    return 0;
}

void run_history_free(RunResume *r) {
    free(r->changes);
    r->changes = NULL;
}

// ---- config.cfg and its history

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    CHECK_ALLOC(m);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) fwrite(chunk, 1, n, m);
    fclose(f);
    fclose(m);
    return buf;
}

char *run_history_save(const char *run_dir, const Config *cfg, const RunResume *resume, Error *err) {
    char path[CFG_PATH_LEN + 32], kept[CFG_PATH_LEN + 32] = "";
    snprintf(path, sizeof path, "%s/config.cfg", run_dir);
    char *text = config_to_string(cfg);
    char *previous = read_file(path);
    if (previous && strcmp(previous, text)) {
        // The first free number: config.1.cfg is the run's first config, config.cfg its latest.
        for (int n = 1;; n++) {
            snprintf(kept, sizeof kept, "%s/config.%d.cfg", run_dir, n);
            if (access(kept, F_OK) != 0) break;
        }
        if (rename(path, kept) != 0) {
            free(previous);
            free(text);
            error_set(err, "%s: cannot keep the previous config as %s: %s", path, kept, strerror(errno));
            return NULL;
        }
    }
    free(previous);
    FILE *f = fopen(path, "w");
    int bad = !f || fputs(text, f) < 0;
    if (f) bad = fclose(f) != 0 || bad;
    free(text);
    if (bad) {
        error_set(err, "%s: cannot write: %s", path, strerror(errno));
        return NULL;
    }

    char *report = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&report, &len);
    CHECK_ALLOC(m);
    if (resume->step >= 0 && !resume->readable) {
        fprintf(m, "resume at step %ld: the checkpoint's config cannot be compared with this one (%s)\n", resume->step, resume->why);
    } else if (resume->step >= 0 && resume->changes) {
        const char *base = strrchr(kept, '/');
        fprintf(m, "resume at step %ld with a changed config%s%s%s:\n%s", resume->step, base ? " (the previous one is kept as " : "",
                base ? base + 1 : "", base ? ")" : "", resume->changes);
        if (resume->schedule_changed) {
            fprintf(m, "  learning rate at step %ld: %.4e under the previous schedule, %.4e under this one", resume->step,
                    resume->lr_old, resume->lr_new);
            if (!strcmp(cfg->extend, "none"))
                fprintf(m, " (train.extend = \"none\": the new schedule as if the run had started with it; \"constant\" keeps "
                           "%.4e, \"rewarm\" climbs back to train.lr and decays to the new end)\n", resume->lr_old);
            else
                fprintf(m, " (train.extend = \"%s\" from step %ld)\n", cfg->extend, cfg->extend_step);
        }
    }
    fclose(m);
    return report;
}
