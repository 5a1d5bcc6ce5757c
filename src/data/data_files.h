// data_files.h: token files on disk (llm.c shards, Megatron .bin, raw text) and the windows read
// from them (private to src/data).
//
// Every file kind is reduced to the same picture: a list of shards, each a run of fixed-width
// little-endian integers starting at some byte offset of some file. Sequences are windows of
// T+1 consecutive tokens inside one segment (a shard, or the train / held-out part of a shard):
// a window never crosses a file boundary.
#pragma once
#include <stdint.h>
#include "data.h"

typedef struct {
    char *path;            // file holding the tokens (never written)
    int64_t data_offset;   // byte offset of token 0 in the file
    int64_t n_tokens;
    // Read-only mapping of the whole file, made by file_source_open for the shards a split uses.
    // Mappings hold no file descriptor, so a thousand-shard corpus costs no fds and no per-read
    // open() (a metadata round trip on a parallel file system).
    const unsigned char *map;
    int64_t map_bytes;
} TokenShard;

typedef struct {
    TokenShard *shards;
    int n_shards;
    int itemsize;          // bytes per token: 1, 2, 4 or 8
    int is_signed;         // Megatron int8/int16/int32/int64 tokens can be negative (bad input)
} TokenFiles;

// Kind-specific openers: check headers and sizes, fill `out` (which they zero first). `key` is the
// config key the path came from ("data.train" or "data.val"), for the messages.
int llmc_open(const char *pattern, const char *key, TokenFiles *out, Error *err);       // data_llmc.c
int megatron_open(const char *prefix, const char *key, TokenFiles *out, Error *err);    // data_megatron.c
int text_open(const char *pattern, const char *key, TokenFiles *out, Error *err);       // data_text.c
void token_files_free(TokenFiles *f);
void token_files_add(TokenFiles *f, const char *path, int64_t data_offset, int64_t n_tokens);

// Shared file helpers (data_files.c).
// Opens read-only and returns the size; on failure "PATH: cannot open (KEY): reason".
int data_file_open(const char *path, const char *key, int *fd, int64_t *size, Error *err);
// pread until n bytes or end of file; returns the bytes read, or -1 on an I/O error (errno set).
int64_t data_pread_full(int fd, void *buf, int64_t n, int64_t offset);
// Expands a glob(3) pattern into sorted paths; a pattern without metacharacters is taken as one
// literal path. No match: "KEY: no file matches \"PATTERN\"". Free with data_free_paths.
int data_expand_pattern(const char *pattern, const char *key, char ***paths, int *n, Error *err);
void data_free_paths(char **paths, int n);

// Runs read(arg, err), which reads the mapping of the file `path`, so that a file truncated
// under the mapping (SIGBUS) ends in "PATH: truncated while being read: ..." (-1) instead of a
// crash. Returns read's result otherwise. Nests; safe on several threads at once.
int data_map_guarded(int (*read)(void *arg, Error *err), void *arg, const char *path, Error *err);

// Little-endian decoding, independent of the host's byte order.
static inline uint64_t data_le(const unsigned char *p, int nbytes) {
    uint64_t v = 0;
    for (int i = nbytes - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

// A contiguous run of tokens of one shard that windows may be drawn from.
typedef struct {
    int shard;
    int64_t first;         // first token (index into the shard)
    int64_t n_tokens;
    int64_t windows_before; // windows of all earlier segments (prefix sum, for the lookup)
} TokenSegment;

// The windows of one split of a file source.
typedef struct {
    TokenFiles files;
    TokenSegment *segs;
    int n_segs;
    int64_t n_windows;     // contiguous windows (stride T), or distinct starts under hashed_starts
    int64_t n_tokens;      // tokens of the segments
    int hashed_starts;     // TRAIN under data.sampling = "random": every token offset is a start
    DataSplit split;
    int T;
    int vocab_size;
    int batch_size;
    uint64_t seed;
} FileSource;

// Which part of a token stream a split reads: all of it, the part before the data.val_fraction
// cut (train), or the part after it (held-out validation).
typedef enum { FILE_PART_ALL, FILE_PART_HEAD, FILE_PART_TAIL } FilePart;

// The split of data.train / data.val that `split` names (data.kind format).
FileSource *file_source_open(const Config *cfg, DataSplit split, Error *err);
// One token stream `path` of format `kind` (`key` names it in messages), cut as `part` says.
FileSource *file_source_open_part(const Config *cfg, const char *kind, const char *path, const char *key, DataSplit split,
                                  FilePart part, Error *err);
// Window number w in [0, n_windows) -> shard and first token.
void file_source_window(const FileSource *fs, uint64_t w, int *shard, int64_t *token);
// The random sampler's start number of sequence (step, index) (hashed_starts only).
uint64_t file_source_hashed_start(const FileSource *fs, uint64_t step, int index);
// Reads the T + 1 tokens at (shard, token) into one sequence (a bad id: -1, message as below).
int file_source_read(const FileSource *fs, int shard, int64_t token, SequenceBuffers out, Error *err);
void file_source_close(FileSource *fs);
int file_source_get(const FileSource *fs, uint64_t step, int index, SequenceBuffers out, Error *err);
// Every token the split can read, against model.vocab_size: slice `part` of `n_parts` (data.h's
// data_check_tokens). One sequential pass over the mappings; 0, or -1 with err naming the first
// bad token's file and byte offset in the message file_source_get would give.
int file_source_check_tokens(const FileSource *fs, int part, int n_parts, Error *err);
// Where sequence (step, index) starts when windows are taken in order (VAL: window
// step * batch_size + index) or by hashed start (data.sampling = "random"): shard and token.
void file_source_locate(const FileSource *fs, uint64_t step, int index, int *shard, int64_t *token);
