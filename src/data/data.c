// data.c: the DataSource dispatcher of data.h: picks the source that data.kind names and
// forwards each question to it. Sources hold no mutable state after data_open, so
// data_get_sequence may be called concurrently and in any order.
#include "data.h"
#include <stdio.h>
#include <string.h>
#include "data_files.h"
#include "data_order.h"
#include "task_logic.h"
#include "task_retrieval.h"

typedef enum { SOURCE_FILES, SOURCE_LOGIC, SOURCE_RETRIEVAL } SourceKind;

struct DataSource {
    SourceKind kind;
    DataSplit split;
    uint64_t seed;
    int vocab_needed;
    // SOURCE_FILES: one FileSource, or one per data.blend source (TRAIN; VAL too when the
    // validation windows are the blend sources' held-out tails, visited source after source).
    FileSource *files[DATA_BLEND_MAX];
    int n_files;
    int64_t val_windows_before[DATA_BLEND_MAX + 1];   // VAL over several sources: prefix sums
    int epoch_order;            // TRAIN windows in epoch permutations (data.sampling = "epoch")
    int batch_size;
    DataBlend blend;            // TRAIN over several sources
    char names[DATA_BLEND_MAX][CFG_PATH_LEN + 16];   // "data.train" / "data.blend[i]" and the path
    LogicTask logic;            // SOURCE_LOGIC
    RetrievalTask retrieval;    // SOURCE_RETRIEVAL
    int n_buckets;
    char labels[DATA_MAX_BUCKETS][32];
};

int data_kind_reads_files(const char *kind) {
    return strcmp(kind, "llmc") == 0 || strcmp(kind, "megatron") == 0 || strcmp(kind, "text") == 0;
}

// The FileSources of a split: data.train / data.val, or the data.blend sources.
static int open_files(DataSource *src, const Config *cfg, DataSplit split, Error *err) {
    src->batch_size = cfg->batch_size > 0 ? cfg->batch_size : 1;
    src->epoch_order = split == SPLIT_TRAIN && strcmp(cfg->data_sampling, "random") != 0;
    int has_val_file = cfg->data_val[0] != '\0';
    if (cfg->data_blend_n == 0 || (split == SPLIT_VAL && has_val_file)) {
        src->files[0] = file_source_open(cfg, split, err);
        if (!src->files[0]) return -1;
        src->n_files = 1;
        snprintf(src->names[0], sizeof src->names[0], "%s", split == SPLIT_VAL && has_val_file ? cfg->data_val : cfg->data_train);
    } else {
        if (cfg->data_blend_n > DATA_BLEND_MAX) return error_set(err, "data.blend: more than %d sources", DATA_BLEND_MAX);
        if (!has_val_file && !(cfg->data_val_fraction > 0 && cfg->data_val_fraction < 1))
            return error_set(err, "data.val: is empty and data.val_fraction is %g: there is no validation data", cfg->data_val_fraction);
        FilePart part = has_val_file ? FILE_PART_ALL : split == SPLIT_TRAIN ? FILE_PART_HEAD : FILE_PART_TAIL;
        double w[DATA_BLEND_MAX];
        for (int i = 0; i < cfg->data_blend_n; i++) {
            const DataBlendSource *b = &cfg->data_blend[i];
            char key[32];
            snprintf(key, sizeof key, "data.blend[%d]", i);
            src->files[i] = file_source_open_part(cfg, b->kind, b->path, key, split, part, err);
            if (!src->files[i]) return -1;
            src->n_files = i + 1;
            snprintf(src->names[i], sizeof src->names[i], "%s", b->path);
            w[i] = b->weight;
        }
        int bad = 0;
        if (data_blend_init(&src->blend, w, cfg->data_blend_n, &bad))
            return error_set(err, "data.blend[%d]: weight %g is less than 2^-62 of the total", bad, cfg->data_blend[bad].weight);
    }
    if (src->blend.n == 0) src->blend.n = 1;
    for (int i = 0; i < src->n_files; i++)
        src->val_windows_before[i + 1] = src->val_windows_before[i] + src->files[i]->n_windows;
    return 0;
}

DataSource *data_open(const Config *cfg, DataSplit split, Error *err) {
    const char *kind = cfg->data_kind;
    DataSource *src = xcalloc(1, sizeof *src);
    src->split = split;
    src->seed = cfg->seed;
    if (data_kind_reads_files(kind)) {
        src->kind = SOURCE_FILES;
        if (open_files(src, cfg, split, err)) goto fail;
        // Text is bytes: every id below 256 can occur (data.kind, or the kind of a blend source).
        int text = strcmp(kind, "text") == 0;
        for (int i = 0; i < cfg->data_blend_n ; i++) text |= strcmp(cfg->data_blend[i].kind, "text") == 0;
        src->vocab_needed = text ? 256 : 0;
    } else if (strcmp(kind, "logic") == 0 || strcmp(kind, "retrieval") == 0) {
        if (cfg->seq_len < 1) { error_set(err, "model.seq_len: %d must be >= 1", cfg->seq_len); goto fail; }
        if (kind[0] == 'l') {
            src->kind = SOURCE_LOGIC;
            if (logic_init(&src->logic, cfg, err)) goto fail;
            src->vocab_needed = logic_vocab(&src->logic);
            src->n_buckets = src->logic.depth_max - src->logic.depth_min + 1;
            for (int b = 0; b < src->n_buckets; b++)
                snprintf(src->labels[b], sizeof src->labels[b], "depth %d", src->logic.depth_min + b);
        } else {
            src->kind = SOURCE_RETRIEVAL;
            if (retrieval_init(&src->retrieval, cfg, err)) goto fail;
            src->vocab_needed = retrieval_vocab(&src->retrieval);
            src->n_buckets = src->retrieval.n_distances;
            for (int b = 0; b < src->n_buckets; b++)
                snprintf(src->labels[b], sizeof src->labels[b], "distance %d", src->retrieval.distances[b]);
        }
        // Task tokens are never checked one by one, so a too small vocabulary is caught here
        // (0 leaves the choice to the caller, which can size the model from data_vocab_needed).
        if (cfg->vocab_size > 0 && cfg->vocab_size < src->vocab_needed) {
            error_set(err, "model.vocab_size: %d is smaller than the %d tokens of data.kind \"%s\"", cfg->vocab_size, src->vocab_needed, kind);
            goto fail;
        }
    } else {
        error_set(err, "data.kind: unknown kind \"%s\" (expected llmc, megatron, text, logic or retrieval)", kind);
        goto fail;
    }
    return src;
fail:
    data_close(src);
    return NULL;
}

void data_close(DataSource *src) {
    if (!src) return;
    for (int i = 0; i < src->n_files; i++) file_source_close(src->files[i]);
    free(src);
}

int data_vocab_needed(const DataSource *src) { return src->vocab_needed; }

int data_check_tokens(const DataSource *src, int part, int n_parts, Error *err) {
    if (n_parts < 1 || part < 0 || part >= n_parts) return error_set(err, "data_check_tokens: part %d of %d", part, n_parts);
    if (src->kind != SOURCE_FILES) return 0;
    for (int i = 0; i < src->n_files; i++)
        if (file_source_check_tokens(src->files[i], part, n_parts, err)) return -1;
    return 0;
}

int data_locate(const DataSource *src, uint64_t step, int index, DataSampleInfo *out) {
    memset(out, 0, sizeof *out);
    out->sample = step * (uint64_t)(src->kind == SOURCE_FILES ? src->batch_size : 1) + (uint64_t)(int64_t)index;
    if (src->kind != SOURCE_FILES) return -1;
    const FileSource *fs;
    if (src->split == SPLIT_VAL) {
        // Fixed windows in file order: window (step * batch_size + index) mod the total, over the
        // sources one after the other.
        uint64_t w = out->sample % (uint64_t)src->val_windows_before[src->n_files];
        int i = 0;
        while (i + 1 < src->n_files && (uint64_t)src->val_windows_before[i + 1] <= w) i++;
        out->source = i;
        out->position = w;
        out->window = w - (uint64_t)src->val_windows_before[i];
        fs = src->files[i];
    } else if (!src->epoch_order) {
        fs = src->files[0];
        out->window = file_source_hashed_start(fs, step, index);
        out->epoch = out->sample / (uint64_t)fs->n_windows;   // nominal: windows are drawn with replacement
        out->position = out->sample % (uint64_t)fs->n_windows;
    } else {
        uint64_t j;
        data_blend_pick(&src->blend, out->sample, &out->source, &j);
        fs = src->files[out->source];
        uint64_t n = (uint64_t)fs->n_windows;
        out->epoch = j / n;
        out->position = j % n;
        DataPerm perm;
        data_perm_init(&perm, n, fs->seed, (uint64_t)out->source, out->epoch);
        out->window = data_perm_apply(&perm, out->position);
    }
    file_source_window(fs, out->window, &out->shard, &out->token);
    out->path = fs->files.shards[out->shard].path;
    return 0;
}

int data_get_sequence(DataSource *src, uint64_t step, int index, SequenceBuffers out, Error *err) {
    if (index < 0) return error_set(err, "data_get_sequence: index %d < 0", index);
    switch (src->kind) {
    case SOURCE_FILES: {
        DataSampleInfo at;
        data_locate(src, step, index, &at);
        return file_source_read(src->files[at.source], at.shard, at.token, out, err);
    }
    case SOURCE_LOGIC: return logic_fill(&src->logic, src->seed, src->split, step, index, out, err);
    case SOURCE_RETRIEVAL: return retrieval_fill(&src->retrieval, src->seed, src->split, step, index, out, err);
    }
    return error_set(err, "data_get_sequence: bad source");
}

long data_n_sequences(const DataSource *src) {
    if (src->kind == SOURCE_FILES) {
        int64_t n = src->val_windows_before[src->n_files];
        return n > INT32_MAX ? INT32_MAX : (long)n;
    }
    return INT32_MAX;
}

int data_n_sources(const DataSource *src) { return src->kind == SOURCE_FILES ? src->n_files : 0; }

int data_source_stats(const DataSource *src, int i, DataSourceStats *out) {
    memset(out, 0, sizeof *out);
    if (src->kind != SOURCE_FILES || i < 0 || i >= src->n_files) return -1;
    const FileSource *fs = src->files[i];
    out->name = src->names[i];
    out->n_shards = fs->files.n_shards;
    out->n_tokens = fs->n_tokens;
    out->n_windows = fs->n_windows;
    out->weight = src->n_files > 1 && src->split == SPLIT_TRAIN ? (double)src->blend.p[i] / (double)DATA_BLEND_ONE : 1.0;
    return 0;
}

uint64_t data_samples_of_source(const DataSource *src, int i, uint64_t samples) {
    if (src->kind != SOURCE_FILES || src->split != SPLIT_TRAIN || src->n_files <= 1) return i == 0 ? samples : 0;
    return data_blend_count(&src->blend, i, samples);
}

int data_n_buckets(const DataSource *src) { return src->n_buckets; }

const char *data_bucket_label(const DataSource *src, int bucket) {
    if (bucket < 0 || bucket >= src->n_buckets) return NULL;
    return src->labels[bucket];
}
