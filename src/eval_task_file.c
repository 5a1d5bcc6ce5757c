// eval_task_file.c: the token file of multiple-choice items (format in eval_task_file.h).
#include "eval_task_file.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t *ids;
    int n, cap;
} IdList;

static void push(IdList *l, int32_t v) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->ids = realloc(l->ids, (size_t)l->cap * sizeof *l->ids);
        CHECK_ALLOC(l->ids);
    }
    l->ids[l->n++] = v;
}

// Parses the ids of one field [s, end) into l. Returns -1 with err naming the token.
static int parse_ids(const char *s, const char *end, IdList *l, int vocab, const char *path, int line_no,
                     const char *field, Error *err) {
    l->n = 0;
    while (s < end) {
        while (s < end && (*s == ' ' || *s == '\t')) s++;
        if (s >= end) break;
        char *stop;
        errno = 0;
        long v = strtol(s, &stop, 10);
        if (stop == s || stop > end || errno || (stop < end && *stop != ' ' && *stop != '\t')) {
            int word = 0;   // the offending word, up to the next blank
            while (s + word < end && s[word] != ' ' && s[word] != '\t' && word < 20) word++;
            return error_set(err, "%s: line %d: %s: '%.*s' is not a token id", path, line_no, field, word, s);
        }
        if (v < 0 || v >= vocab)
            return error_set(err, "%s: line %d: %s: token id %ld is outside the vocabulary (model.vocab_size %d)", path, line_no,
                             field, v, vocab);
        push(l, (int32_t)v);
        s = stop;
    }
    if (l->n == 0) return error_set(err, "%s: line %d: %s is empty", path, line_no, field);
    return 0;
}

static int32_t *copy_ids(const IdList *l) {
    int32_t *out = xmalloc((size_t)l->n * sizeof *out);
    memcpy(out, l->ids, (size_t)l->n * sizeof *out);
    return out;
}

// Appends one item of `fields` (LABEL, context, endings) to out.
static int add_item(McItems *out, char *text, const char *path, int line_no, int vocab, int seq_len, Error *err) {
    char *fields[EVAL_MAX_ENDINGS + 3];
    int nf = 0;
    fields[nf++] = text;
    for (char *p = text; *p; p++)
        if (*p == '|') {
            if (nf == EVAL_MAX_ENDINGS + 3)
                return error_set(err, "%s: line %d: more than %d endings", path, line_no, EVAL_MAX_ENDINGS);
            *p = 0;
            fields[nf++] = p + 1;
        }
    int n_end = nf - 2;
    if (n_end < 2)
        return error_set(err, "%s: line %d: expected 'LABEL | CONTEXT IDS | ENDING IDS | ...' with at least 2 endings", path, line_no);
    if (out->n_items > 0 && n_end != out->n_endings)
        return error_set(err, "%s: line %d: %d endings, but line %d has %d (every item needs the same number)", path, line_no,
                         n_end, out->line[0], out->n_endings);
    char *stop, *label_text = fields[0];
    while (*label_text == ' ' || *label_text == '\t') label_text++;
    for (size_t k = strlen(label_text); k > 0 && (label_text[k - 1] == ' ' || label_text[k - 1] == '\t'); k--) label_text[k - 1] = 0;
    errno = 0;
    long label = strtol(label_text, &stop, 10);
    if (stop == label_text || *stop || errno)
        return error_set(err, "%s: line %d: label '%.20s' is not an integer", path, line_no, label_text);
    if (label < 0 || label >= n_end)
        return error_set(err, "%s: line %d: label %ld is not the index of one of the %d endings", path, line_no, label, n_end);
    IdList ctx = {0}, end[EVAL_MAX_ENDINGS] = {{0}};
    int rc = parse_ids(fields[1], fields[1] + strlen(fields[1]), &ctx, vocab, path, line_no, "context", err);
    for (int e = 0; !rc && e < n_end; e++) {
        char name[32];
        snprintf(name, sizeof name, "ending %d", e);
        rc = parse_ids(fields[2 + e], fields[2 + e] + strlen(fields[2 + e]), &end[e], vocab, path, line_no, name, err);
        if (!rc && end[e].n > seq_len)
            rc = error_set(err, "%s: line %d: ending %d has %d tokens, more than model.seq_len %d", path, line_no, e, end[e].n, seq_len);
    }
    if (!rc) {
        int i = out->n_items++;
        out->n_endings = n_end;
        out->label = realloc(out->label, (size_t)out->n_items * sizeof *out->label);
        out->ctx_len = realloc(out->ctx_len, (size_t)out->n_items * sizeof *out->ctx_len);
        out->ctx = realloc(out->ctx, (size_t)out->n_items * sizeof *out->ctx);
        out->line = realloc(out->line, (size_t)out->n_items * sizeof *out->line);
        out->end_len = realloc(out->end_len, (size_t)out->n_items * n_end * sizeof *out->end_len);
        out->end = realloc(out->end, (size_t)out->n_items * n_end * sizeof *out->end);
        CHECK_ALLOC(out->label);
        CHECK_ALLOC(out->ctx_len);
        CHECK_ALLOC(out->ctx);
        CHECK_ALLOC(out->line);
        CHECK_ALLOC(out->end_len);
        CHECK_ALLOC(out->end);
        out->label[i] = (int)label;
        out->line[i] = line_no;
        out->ctx_len[i] = ctx.n;
        out->ctx[i] = copy_ids(&ctx);
        for (int e = 0; e < n_end; e++) {
            out->end_len[(size_t)i * n_end + e] = end[e].n;
            out->end[(size_t)i * n_end + e] = copy_ids(&end[e]);
        }
    }
    free(ctx.ids);
    for (int e = 0; e < EVAL_MAX_ENDINGS; e++) free(end[e].ids);
    return rc;
}

int mc_items_read(const char *path, int vocab, int seq_len, McItems *out, Error *err) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (!f) return error_set(err, "%s: cannot read: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    int no = 0, rc = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        no++;
        if ((size_t)len != strlen(line)) { rc = error_set(err, "%s: line %d: a NUL byte (not a token file)", path, no); break; }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        const char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (!*s || *s == '#') continue;
        if ((rc = add_item(out, line, path, no, vocab, seq_len, err))) break;
    }
    if (!rc && ferror(f)) rc = error_set(err, "%s: read error: %s", path, strerror(errno));
    free(line);
    fclose(f);
    if (!rc && out->n_items == 0) rc = error_set(err, "%s: no items (one 'LABEL | CONTEXT IDS | ENDING IDS | ...' line per item)", path);
    if (rc) mc_items_free(out);
    return rc;
}

void mc_items_free(McItems *items) {
    for (int i = 0; i < items->n_items; i++) free(items->ctx[i]);
    for (long i = 0; i < (long)items->n_items * items->n_endings; i++) free(items->end[i]);
    free(items->label);
    free(items->ctx_len);
    free(items->ctx);
    free(items->end_len);
    free(items->end);
    free(items->line);
    memset(items, 0, sizeof *items);
}
