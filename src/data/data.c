// data.c: the DataSource dispatcher of data.h: picks the source that data.kind names and
// forwards each question to it. Sources hold no mutable state after data_open, so
// data_get_sequence may be called concurrently and in any order.
#include "data.h"
#include <stdio.h>
#include <string.h>
#include "data_files.h"
#include "task_logic.h"
#include "task_retrieval.h"

typedef enum { SOURCE_FILES, SOURCE_LOGIC, SOURCE_RETRIEVAL } SourceKind;

struct DataSource {
    SourceKind kind;
    DataSplit split;
    uint64_t seed;
    int vocab_needed;
    FileSource *files;          // SOURCE_FILES
    LogicTask logic;            // SOURCE_LOGIC
    RetrievalTask retrieval;    // SOURCE_RETRIEVAL
    int n_buckets;
    char labels[DATA_MAX_BUCKETS][32];
};

int data_kind_reads_files(const char *kind) {
    return strcmp(kind, "llmc") == 0 || strcmp(kind, "megatron") == 0 || strcmp(kind, "text") == 0;
}

DataSource *data_open(const Config *cfg, DataSplit split, Error *err) {
    const char *kind = cfg->data_kind;
    DataSource *src = xcalloc(1, sizeof *src);
    src->split = split;
    src->seed = cfg->seed;
    if (data_kind_reads_files(kind)) {
        src->kind = SOURCE_FILES;
        src->files = file_source_open(cfg, split, err);
        if (!src->files) goto fail;
        src->vocab_needed = strcmp(kind, "text") == 0 ? 256 : 0;
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
    file_source_close(src->files);
    free(src);
}

int data_vocab_needed(const DataSource *src) { return src->vocab_needed; }

int data_check_tokens(const DataSource *src, int part, int n_parts, Error *err) {
    if (n_parts < 1 || part < 0 || part >= n_parts) return error_set(err, "data_check_tokens: part %d of %d", part, n_parts);
    return src->kind == SOURCE_FILES ? file_source_check_tokens(src->files, part, n_parts, err) : 0;
}

int data_get_sequence(DataSource *src, uint64_t step, int index, SequenceBuffers out, Error *err) {
    if (index < 0) return error_set(err, "data_get_sequence: index %d < 0", index);
    switch (src->kind) {
    case SOURCE_FILES: return file_source_get(src->files, step, index, out, err);
    case SOURCE_LOGIC: return logic_fill(&src->logic, src->seed, src->split, step, index, out, err);
    case SOURCE_RETRIEVAL: return retrieval_fill(&src->retrieval, src->seed, src->split, step, index, out, err);
    }
    return error_set(err, "data_get_sequence: bad source");
}

long data_n_sequences(const DataSource *src) {
    if (src->kind == SOURCE_FILES) return src->files->n_windows > INT32_MAX ? INT32_MAX : (long)src->files->n_windows;
    return INT32_MAX;
}

int data_n_buckets(const DataSource *src) { return src->n_buckets; }

const char *data_bucket_label(const DataSource *src, int bucket) {
    if (bucket < 0 || bucket >= src->n_buckets) return NULL;
    return src->labels[bucket];
}
