// data_windows.c: windows of T+1 tokens over token files, for the llmc, megatron and text kinds.
//
// Splits. With data.val set, TRAIN reads data.train and VAL reads data.val, whole. Otherwise the
// token stream of data.train (shards in order) is cut at total - floor(total * data.val_fraction):
// TRAIN draws windows from the first part only, VAL from the last part only, so no token is seen
// by both (a window never straddles the cut, which acts as a segment boundary). A blend source
// (data.blend) is one FileSource of its own, cut the same way.
//
// Windows, for a split made of segments of n_i tokens each:
//   TRAIN, data.sampling = "epoch" (default): contiguous windows with stride T, as VAL below: the
//          inputs tile each segment and consecutive windows share their boundary token (llm.c's and
//          Megatron's sample layout). Which window a sample reads is chosen by data.c (an epoch
//          permutation of data_order.h); this file maps a window number to its tokens.
//   TRAIN, data.sampling = "random" (the sampler before issue 20, kept bit for bit): any start in
//          [0, n_i - T) of any segment: sum_i (n_i - T) starts; sequence (step, index) takes start
//          number data_hash4(seed, TRAIN, step, index) mod that count, with replacement.
//   VAL    contiguous windows with stride T (inputs tile the segment, the last target of one window
//          is the first input of the next): floor((n_i - 1) / T) per segment; sequence (step, index)
//          is window number (step * batch_size + index) mod the count: the same windows in the same
//          order at every evaluation of every run.
#define _FILE_OFFSET_BITS 64
#include "data_files.h"
#include "data_hash.h"
#include <errno.h>
#include <sys/mman.h>
#include <string.h>
#include <unistd.h>

static int open_token_files(const char *kind, const char *path, const char *key, TokenFiles *f, Error *err) {
    if (strcmp(kind, "llmc") == 0) return llmc_open(path, key, f, err);
    if (strcmp(kind, "megatron") == 0) return megatron_open(path, key, f, err);
    if (strcmp(kind, "text") == 0) return text_open(path, key, f, err);
    return error_set(err, "data.kind: \"%s\" is not a file kind", kind);
}

static int64_t windows_in(int hashed_starts, int64_t n_tokens, int T) {
    if (n_tokens < (int64_t)T + 1) return 0;
    return hashed_starts ? n_tokens - T : (n_tokens - 1) / T;
}

// Maps the whole file read-only. The size is checked again: a file that shrank since its header
// was checked would fault (SIGBUS) when read through the mapping instead of failing cleanly.
static int map_shard(TokenShard *sh, int itemsize, const char *key, DataSplit split, Error *err) {
    int fd;
    int64_t size, end = sh->data_offset + sh->n_tokens * itemsize;
    if (data_file_open(sh->path, key, &fd, &size, err)) return -1;
    if (size < end) {
        close(fd);
        return error_set(err, "%s: truncated: %lld bytes are expected, the file has %lld (data ends at byte offset %lld)",
                         sh->path, (long long)end, (long long)size, (long long)size);
    }
    void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);   // the mapping stays valid without the descriptor
    if (m == MAP_FAILED) return error_set(err, "%s: cannot map (%s): %s", sh->path, key, strerror(e));
    // Train windows are visited in a shuffled order: no point in reading far ahead around each one.
    if (split == SPLIT_TRAIN) madvise(m, (size_t)size, MADV_RANDOM);
    sh->map = m;
    sh->map_bytes = size;
    return 0;
}

FileSource *file_source_open(const Config *cfg, DataSplit split, Error *err) {
    int has_val_file = cfg->data_val[0] != '\0';
    double frac = cfg->data_val_fraction;
    if (!has_val_file && (frac < 0 || frac >= 1)) {
        error_set(err, "data.val_fraction: %g must be in [0, 1)", frac);
        return NULL;
    }
    if (split == SPLIT_TRAIN)
        return file_source_open_part(cfg, cfg->data_kind, cfg->data_train, "data.train", split, !has_val_file && frac > 0 ? FILE_PART_HEAD : FILE_PART_ALL, err);
    if (has_val_file) return file_source_open_part(cfg, cfg->data_kind, cfg->data_val, "data.val", split, FILE_PART_ALL, err);
    if (frac > 0) return file_source_open_part(cfg, cfg->data_kind, cfg->data_train, "data.train", split, FILE_PART_TAIL, err);
    error_set(err, "data.val: is empty and data.val_fraction is 0: there is no validation data");
    return NULL;
}

FileSource *file_source_open_part(const Config *cfg, const char *kind, const char *path, const char *key, DataSplit split,
                                  FilePart part, Error *err) {
    int T = cfg->seq_len;
    if (T < 1) { error_set(err, "model.seq_len: %d must be >= 1", T); return NULL; }
    double frac = cfg->data_val_fraction;
    if (part != FILE_PART_ALL && (frac <= 0 || frac >= 1)) {
        error_set(err, "data.val_fraction: %g must be in (0, 1)", frac);
        return NULL;
    }

    FileSource *fs = xcalloc(1, sizeof *fs);
    fs->split = split;
    fs->T = T;
    fs->vocab_size = cfg->vocab_size;
    fs->batch_size = cfg->batch_size;
    fs->seed = cfg->seed;
    // An unset data.sampling (a Config built field by field) is the default, "epoch".
    fs->hashed_starts = split == SPLIT_TRAIN && strcmp(cfg->data_sampling, "random") == 0;
    if (open_token_files(kind, path, key, &fs->files, err)) { free(fs); return NULL; }

    int64_t total = 0, largest = 0;
    for (int i = 0; i < fs->files.n_shards; i++) {
        total += fs->files.shards[i].n_tokens;
        if (fs->files.shards[i].n_tokens > largest) largest = fs->files.shards[i].n_tokens;
    }
    int64_t cut = part == FILE_PART_ALL ? total : total - (int64_t)((double)total * frac);
    int64_t lo = part == FILE_PART_TAIL ? cut : 0, hi = part == FILE_PART_HEAD ? cut : total;

    // Segments: each shard clipped to [lo, hi) of the global stream; empty ones are dropped.
    fs->segs = xcalloc((size_t)fs->files.n_shards, sizeof *fs->segs);
    int64_t g0 = 0;
    for (int i = 0; i < fs->files.n_shards; i++) {
        int64_t n = fs->files.shards[i].n_tokens;
        int64_t a = g0 > lo ? g0 : lo, b = g0 + n < hi ? g0 + n : hi;
        g0 += n;
        if (b <= a) continue;
        int64_t w = windows_in(fs->hashed_starts, b - a, T);
        if (w == 0) continue;
        TokenSegment *s = &fs->segs[fs->n_segs++];
        s->shard = i;
        s->first = a - (g0 - n);
        s->n_tokens = b - a;
        s->windows_before = fs->n_windows;
        fs->n_windows += w;
        fs->n_tokens += b - a;
    }
    for (int k = 0; k < fs->n_segs; k++) {
        TokenShard *sh = &fs->files.shards[fs->segs[k].shard];
        if (!sh->map && map_shard(sh, fs->files.itemsize, key, split, err)) { file_source_close(fs); return NULL; }
    }
    if (fs->n_windows == 0) {
        if (part == FILE_PART_TAIL)
            error_set(err, "data.val_fraction: the held-out last %g of \"%s\" is %lld tokens, fewer than model.seq_len + 1 = %d",
                      frac, path, (long long)(total - cut), T + 1);
        else
            error_set(err, "%s: no window of model.seq_len + 1 = %d tokens fits in \"%s\" (%d file(s), largest %lld tokens%s)",
                      key, T + 1, path, fs->files.n_shards, (long long)largest, part == FILE_PART_HEAD ? ", before the data.val_fraction cut" : "");
        file_source_close(fs);
        return NULL;
    }
    return fs;
}

void file_source_close(FileSource *fs) {
    if (!fs) return;
    token_files_free(&fs->files);
    free(fs->segs);
    free(fs);
}

void file_source_window(const FileSource *fs, uint64_t w, int *shard, int64_t *token) {
    // Last segment whose windows_before <= w (binary search over the prefix sums).
    int lo = 0, hi = fs->n_segs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if ((uint64_t)fs->segs[mid].windows_before <= w) lo = mid; else hi = mid - 1;
    }
    const TokenSegment *s = &fs->segs[lo];
    int64_t local = (int64_t)w - s->windows_before;
    *shard = s->shard;
    *token = s->first + (fs->hashed_starts ? local : local * fs->T);
}

uint64_t file_source_hashed_start(const FileSource *fs, uint64_t step, int index) {
    return data_hash4(fs->seed, SPLIT_TRAIN, step, (uint64_t)(int64_t)index) % (uint64_t)fs->n_windows;
}

void file_source_locate(const FileSource *fs, uint64_t step, int index, int *shard, int64_t *token) {
    uint64_t w;
    if (fs->hashed_starts) {
        w = file_source_hashed_start(fs, step, index);
    } else {
        uint64_t b = fs->batch_size > 0 ? (uint64_t)fs->batch_size : 1;
        w = (step * b + (uint64_t)(int64_t)index) % (uint64_t)fs->n_windows;
    }
    file_source_window(fs, w, shard, token);
}

// Token id at byte `at` of a shard, sign-extended for the signed Megatron dtypes.
static int64_t token_at(const TokenFiles *f, const TokenShard *sh, int64_t at) {
    int isz = f->itemsize;
    uint64_t raw = data_le(sh->map + at, isz);
    if (f->is_signed && isz < 8 && (raw >> (8 * isz - 1)) & 1) return (int64_t)(raw | (~0ULL << (8 * isz)));
    return (int64_t)raw;
}

// The message of a token id outside [0, vocab) at byte `at` of shard `sh`: the same for the
// start-up pass and for a window.
static int bad_token(const TokenShard *sh, int64_t at, int64_t id, int vocab, Error *err) {
    if (id < 0) return error_set(err, "%s: byte offset %lld: negative token id %lld", sh->path, (long long)at, (long long)id);
    return error_set(err, "%s: byte offset %lld: token id %lld >= model.vocab_size %d", sh->path, (long long)at, (long long)id, vocab);
}

int file_source_get(const FileSource *fs, uint64_t step, int index, SequenceBuffers out, Error *err) {
    int shard_i;
    int64_t token;
    file_source_locate(fs, step, index, &shard_i, &token);
    return file_source_read(fs, shard_i, token, out, err);
}

typedef struct {
    const FileSource *fs;
    const TokenShard *sh;
    int64_t token;
    SequenceBuffers out;
} WindowRead;

static int read_window(void *arg, Error *err) {
    const WindowRead *w = arg;
    const FileSource *fs = w->fs;
    const TokenShard *sh = w->sh;
    int T = fs->T, isz = fs->files.itemsize;
    int64_t offset = sh->data_offset + w->token * isz;   // byte offset of the window in the file (in the mapping: checked at open)
    for (int t = 0; t <= T; t++) {
        int64_t at = offset + (int64_t)t * isz;
        int64_t id = token_at(&fs->files, sh, at);
        if (id < 0 || id >= fs->vocab_size) return bad_token(sh, at, id, fs->vocab_size, err);
        if (t < T) w->out.tokens[t] = (int32_t)id;
        if (t > 0) w->out.targets[t - 1] = (int32_t)id;
    }
    for (int t = 0; t < T; t++) w->out.buckets[t] = -1;
    return 0;
}

// Through data_map_guarded: a shard truncated since it was mapped fails in one line, not SIGBUS.
int file_source_read(const FileSource *fs, int shard_i, int64_t token, SequenceBuffers out, Error *err) {
    WindowRead w = {fs, &fs->files.shards[shard_i], token, out};
    return data_map_guarded(read_window, &w, w.sh->path, err);
}

// ---------------------------------------------------------------------------------------------
// The start-up pass over every token (data_check_tokens).
//
// Each kernel returns the index of the first of p[0, n) outside [0, vocab), or -1. The min / max of
// a block is a branch-free reduction that the compiler vectorises (16 uint16 per AVX2 instruction);
// only a block that holds a bad id is searched again, element by element. The arrays are read in
// place from the mapping: token 0 of a shard sits at a multiple of the item size (llm.c: 1024;
// Megatron: the first pointer, checked to be a multiple), in a page-aligned mapping.
enum { SCAN_BLOCK = 1 << 16 };

#define DEFINE_SCAN_UNSIGNED(name, T)                                                   \
    static int64_t name(const void *base, int64_t n, int64_t vocab) {                   \
        const T *p = base;                                                              \
        for (int64_t i0 = 0; i0 < n; i0 += SCAN_BLOCK) {                                \
            int64_t len = n - i0 < SCAN_BLOCK ? n - i0 : SCAN_BLOCK;                    \
            const T *q = p + i0;                                                        \
            T hi = 0;                                                                   \
            for (int64_t i = 0; i < len; i++) hi = q[i] > hi ? q[i] : hi;               \
            if ((int64_t)hi < vocab) continue;                                          \
            for (int64_t i = 0; i < len; i++)                                           \
                if ((int64_t)q[i] >= vocab) return i0 + i;                              \
        }                                                                               \
        return -1;                                                                      \
    }
#define DEFINE_SCAN_SIGNED(name, T)                                                     \
    static int64_t name(const void *base, int64_t n, int64_t vocab) {                   \
        const T *p = base;                                                              \
        for (int64_t i0 = 0; i0 < n; i0 += SCAN_BLOCK) {                                \
            int64_t len = n - i0 < SCAN_BLOCK ? n - i0 : SCAN_BLOCK;                    \
            const T *q = p + i0;                                                        \
            T lo = 0, hi = 0;                                                           \
            for (int64_t i = 0; i < len; i++) {                                         \
                lo = q[i] < lo ? q[i] : lo;                                             \
                hi = q[i] > hi ? q[i] : hi;                                             \
            }                                                                           \
            if (lo >= 0 && (int64_t)hi < vocab) continue;                               \
            for (int64_t i = 0; i < len; i++)                                           \
                if (q[i] < 0 || (int64_t)q[i] >= vocab) return i0 + i;                  \
        }                                                                               \
        return -1;                                                                      \
    }
DEFINE_SCAN_UNSIGNED(scan_u8, uint8_t)
DEFINE_SCAN_UNSIGNED(scan_u16, uint16_t)
DEFINE_SCAN_SIGNED(scan_i8, int8_t)
DEFINE_SCAN_SIGNED(scan_i16, int16_t)
DEFINE_SCAN_SIGNED(scan_i32, int32_t)
DEFINE_SCAN_SIGNED(scan_i64, int64_t)

// First bad token of tokens [first, first + n) of shard `sh`, as a byte offset, or -1.
static int64_t scan_range(const TokenFiles *f, const TokenShard *sh, int64_t first, int64_t n, int64_t vocab) {
    int isz = f->itemsize;
    int64_t at = sh->data_offset + first * isz;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const void *p = sh->map + at;
    int64_t i = -1;
    switch (isz * 2 + f->is_signed) {
    case 2: i = scan_u8(p, n, vocab); break;
    case 3: i = scan_i8(p, n, vocab); break;
    case 4: i = scan_u16(p, n, vocab); break;
    case 5: i = scan_i16(p, n, vocab); break;
    case 9: i = scan_i32(p, n, vocab); break;
    case 17: i = scan_i64(p, n, vocab); break;
    default:   // uint32 / uint64: no file kind has them
        for (int64_t k = 0; k < n && i < 0; k++) {
            int64_t id = token_at(f, sh, at + k * isz);
            if (id < 0 || id >= vocab) i = k;
        }
    }
    return i < 0 ? -1 : at + i * isz;
#else
    // Another byte order: decode each token (slow, but correct).
    for (int64_t k = 0; k < n; k++) {
        int64_t id = token_at(f, sh, at + k * isz);
        if (id < 0 || id >= vocab) return at + k * isz;
    }
    return -1;
#endif
}

typedef struct {
    const TokenFiles *f;
    const TokenShard *sh;
    int64_t first, n, vocab, bad;
} ScanRead;

static int scan_read(void *arg, Error *err) {
    (void)err;
    ScanRead *r = arg;
    r->bad = scan_range(r->f, r->sh, r->first, r->n, r->vocab);
    return 0;
}

int file_source_check_tokens(const FileSource *fs, int part, int n_parts, Error *err) {
    const TokenFiles *f = &fs->files;
    // Types whose every value is a valid id need no pass (bytes under a vocabulary >= 256, uint16 >= 65536).
    if (!f->is_signed && f->itemsize < 8 && (int64_t)fs->vocab_size >> (8 * f->itemsize) > 0) return 0;
    int64_t total = 0;
    for (int k = 0; k < fs->n_segs; k++) total += fs->segs[k].n_tokens;
    // Slice `part` of n_parts near-equal slices of the split's token stream (no 64-bit overflow).
    int64_t q = total / n_parts, r = total % n_parts;
    int64_t lo = part * q + (part < r ? part : r), hi = lo + q + (part < r);
    long page = sysconf(_SC_PAGESIZE);
    int64_t g = 0;
    for (int k = 0; k < fs->n_segs && g < hi; k++) {
        const TokenSegment *s = &fs->segs[k];
        int64_t a = lo > g ? lo : g, b = hi < g + s->n_tokens ? hi : g + s->n_tokens;
        if (b > a) {
            const TokenShard *sh = &f->shards[s->shard];
            int64_t first = s->first + (a - g), n = b - a;
            // One sequential read: the train mapping was advised MADV_RANDOM (no read-ahead), which
            // would read a cold file 4 KiB at a time. The split's own advice is restored after.
            int64_t begin = sh->data_offset + first * f->itemsize, end = begin + n * f->itemsize;
            int64_t abegin = begin / page * page;
            void *range = (void *)(sh->map + abegin);
            size_t range_len = (size_t)(end - abegin);
            madvise(range, range_len, MADV_SEQUENTIAL);
            ScanRead sr = {f, sh, first, n, fs->vocab_size, -1};
            if (data_map_guarded(scan_read, &sr, sh->path, err)) return -1;
            int64_t bad = sr.bad;
            madvise(range, range_len, fs->split == SPLIT_TRAIN ? MADV_RANDOM : MADV_NORMAL);
            if (bad >= 0) return bad_token(sh, bad, token_at(f, sh, bad), fs->vocab_size, err);
        }
        g += s->n_tokens;
    }
    return 0;
}
