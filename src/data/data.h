// data.h: token sources for training and evaluation (docs/data-formats.md).
//
// Every source answers one question: "what is sequence `index` of the global batch of step `step`?"
// The answer depends only on (seed, split, step, index), never on dp, pp or on what was read
// before, so a resumed or re-sharded run sees exactly the samples of an uninterrupted one and dp
// ranks can read disjoint slices of the global batch by index.
#pragma once
#include <stdint.h>
#include "../common.h"
#include "../config.h"

typedef enum { SPLIT_TRAIN = 0, SPLIT_VAL = 1 } DataSplit;

#define DATA_MAX_BUCKETS 16

typedef struct DataSource DataSource;

// One sequence of length T:
//   tokens[t]  input token at position t                     (T)
//   targets[t] token to predict at position t, -1 = no loss  (T)
//   buckets[t] accuracy bucket of the prediction at t (a logic depth or a retrieval distance
//              index), -1 = not an accuracy-scored position   (T)
typedef struct {
    int32_t *tokens;
    int32_t *targets;
    int32_t *buckets;
} SequenceBuffers;

// Opens the source that cfg->data_kind names, for one split. File sources check their headers
// and sizes here. On bad input returns NULL with err->msg naming the file and byte offset
// (or the config key, e.g. "data.train").
DataSource *data_open(const Config *cfg, DataSplit split, Error *err);
void data_close(DataSource *src);

// Whether data.kind reads files (llmc, megatron, text) rather than generating a task.
int data_kind_reads_files(const char *kind);

// Smallest vocabulary the source needs (256 for text, the task alphabet for synthetic tasks,
// the largest token id + 1 seen in the header scan for files is not known: files return 0 and
// are checked token by token instead).
int data_vocab_needed(const DataSource *src);

// Checks every token id that a file source can read against model.vocab_size, in one sequential,
// vectorised pass over the mapped files, so that a bad id is found before a run writes anything
// (validate_run) rather than when a training window happens to read it. The split's tokens, in
// file order, are cut into n_parts equal slices and this call checks slice `part` (0 <= part <
// n_parts), so ranks can share the pass; 0, 1 checks all. Sources whose every id is valid by
// construction (tasks, text under a vocabulary >= 256, uint16 files under one >= 65536) return 0
// at once. On a bad id returns -1 with err->msg "FILE: byte offset N: token id X >= model.vocab_size
// V" (or "negative token id X") for the first one of the slice, the message data_get_sequence gives.
// data_open itself reads headers only; this pass reads the whole slice once.
int data_check_tokens(const DataSource *src, int part, int n_parts, Error *err);

// Fills one sequence of length T (T = cfg->seq_len). For file sources, a token id >= vocab_size
// is bad input: returns -1 with err->msg naming the file and the byte offset of that token (checked
// again here, window by window: a file may change after data_check_tokens).
int data_get_sequence(DataSource *src, uint64_t step, int index, SequenceBuffers out, Error *err);

// For validation: the number of distinct validation sequences available (windows for files,
// effectively unbounded for tasks: returns INT32_MAX). Validation batch k, sequence i is
// data_get_sequence(src, k, i, ...) on a SPLIT_VAL source.
long data_n_sequences(const DataSource *src);

// Where sequence (step, index) of a file source comes from (data_locate). Train windows under
// data.sampling = "epoch": the global sample g = step * batch_size + index goes to blend source
// `source` (0 without data.blend) as its j-th sample; epoch = j / n_windows and position =
// j mod n_windows of that source, and `window` is the epoch's permutation at that position.
// Under "random": window is the hashed start, epoch / position the nominal g / n, g mod n.
// VAL: the fixed window g mod (all windows), position = that number over all sources.
typedef struct {
    uint64_t sample;       // g
    int source;            // data.blend index (0 without a blend)
    uint64_t epoch;
    uint64_t position;
    uint64_t window;       // window number within the source
    int shard;             // shard of the source's files and first token of the window in it
    int64_t token;
    const char *path;      // the shard's file (valid while the source is open)
} DataSampleInfo;

// Fills `out` for a file source (0); for the synthetic tasks only out->sample is set (-1).
// Pure function of (seed, step, index) and the files' sizes, like data_get_sequence.
int data_locate(const DataSource *src, uint64_t step, int index, DataSampleInfo *out);

// What `entrank info --data` prints per source of a file split.
typedef struct {
    const char *name;      // data.train's pattern or prefix, or the blend source's
    int n_shards;
    int64_t n_tokens;      // tokens of the split (after the data.val_fraction cut)
    int64_t n_windows;     // windows per epoch (random sampling: distinct starts)
    double weight;         // normalised blend weight as used (multiple of 2^-62); 1 without a blend
} DataSourceStats;
int data_n_sources(const DataSource *src);   // 0 for synthetic tasks
int data_source_stats(const DataSource *src, int i, DataSourceStats *out);
// How many of the first `samples` training samples source i receives (closed form).
uint64_t data_samples_of_source(const DataSource *src, int i, uint64_t samples);

// Accuracy buckets: count and human labels ("depth 3", "distance 256").
int data_n_buckets(const DataSource *src);
const char *data_bucket_label(const DataSource *src, int bucket);
