// checkpoint.c: collective parallel-HDF5 checkpoint write and read (see checkpoint.h).
#include "checkpoint.h"
#include "regular_file.h"
#include "r3si.h"
#include "sga.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <mpi.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

// Version 2 added a checksum attribute to every dataset; version 1 files (none) still load.
#define FORMAT_VERSION 2
#define CHECKSUM_ATTR "checksum"

// ---- checksums ------------------------------------------------------------------------------
// A dataset's checksum is the sum, mod 2^64, over its elements of mix(flat index, value bits):
// position-sensitive (a value moved to another index changes it) yet order-independent, so each
// rank hashes the elements it writes or reads and a sum over ranks gives the same number on
// every topology. mix is splitmix64's finaliser, a bijection: any change of one element's bits
// changes that element's term, and the sum, except with probability 2^-64.
static uint64_t mix64(uint64_t x) {
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t element_term(uint64_t index, uint64_t bits) { return mix64(mix64(index + 0x9e3779b97f4a7c15ULL) ^ bits); }

static uint64_t world_sum_u64(uint64_t v) {
    uint64_t sum;
    mpiCheck(MPI_Allreduce(&v, &sum, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD));
    return sum;
}

// ---- which elements a rank owns ---------------------------------------------------------------

// One contiguous run of a tensor: arena elements [arena, arena + n) hold the tensor's flat
// (row-major, layer-stacked) elements [flat, flat + n).
typedef struct {
    size_t arena;
    size_t flat;
    size_t n;
} Run;

typedef struct {
    Run *runs;
    int count, capacity;
    size_t total;
} RunList;

static void runs_add(RunList *l, size_t arena, size_t flat, size_t n) {
    if (n == 0) return;
    if (l->count == l->capacity) {
        l->capacity = l->capacity ? 2 * l->capacity : 16;
        l->runs = realloc(l->runs, (size_t)l->capacity * sizeof(Run));
        CHECK_ALLOC(l->runs);
    }
    l->runs[l->count++] = (Run){arena, flat, n};
    l->total += n;
}

// This rank's part of the checksum of a float dataset: the elements of `runs`, held in `host` in
// run order.
static uint64_t runs_checksum(const RunList *runs, const float *host) {
    uint64_t sum = 0;
    size_t pos = 0;
    for (int r = 0; r < runs->count; r++)
        for (size_t j = 0; j < runs->runs[r].n; j++, pos++) {
            uint32_t bits;
            memcpy(&bits, &host[pos], sizeof bits);
            sum += element_term(runs->runs[r].flat + j, bits);
        }
    return sum;
}

static uint64_t doubles_checksum(const double *v, int n) {
    uint64_t sum = 0;
    for (int i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, &v[i], sizeof bits);
        sum += element_term((uint64_t)i, bits);
    }
    return sum;
}

// The runs of parameter `id` held by this stage that fall inside arena range [begin, end).
// `by_layer`: the file stacks the slices of a listed-layers parameter over every layer (files
// written before such parameters were stored for their layers only).
static RunList owned_runs_in(const Model *m, int id, size_t begin, size_t end, int by_layer) {
    RunList l = {0};
    const ParamInfo *p = &m->params[id];
    if (!p->present) return l;
    int first = p->role == ROLE_BLOCK ? m->layer_begin : 0, last = p->role == ROLE_BLOCK ? m->layer_end : 1;
    for (int layer = first; layer < last; layer++) {
        if (p->role == ROLE_BLOCK && !param_in_layer(p, layer)) continue;
        int row = p->role == ROLE_BLOCK && !by_layer ? param_row(p, layer) : layer;
        size_t a = model_param_offset(m, id, layer), flat = (size_t)row * p->slice_numel;
        size_t lo = a > begin ? a : begin, hi = a + p->slice_numel < end ? a + p->slice_numel : end;
        if (lo < hi) runs_add(&l, lo, flat + (lo - a), hi - lo);
    }
    return l;
}

static RunList owned_runs(const Model *m, int id, size_t begin, size_t end) { return owned_runs_in(m, id, begin, end, 0); }

// The logical dataset shape of a parameter: (rows, d0[, d1]) for block tensors, rows = L or the
// number of listed layers.
static int logical_shape(const Model *m, int id, hsize_t dims[3]) {
    const ParamInfo *p = &m->params[id];
    int r = 0;
    if (p->role == ROLE_BLOCK) dims[r++] = (hsize_t)param_rows(p, m->shape.n_layer);
    for (int d = 0; d < p->slice_ndim; d++) dims[r++] = (hsize_t)p->slice_shape[d];
    return r;
}

// Whether a checkpoint holds this tensor at all (the tied head is wte; SGA only with SGA).
static int stored(const Model *m, int id) {
    return m->params[id].exists;
}

// Selects the row-major flat range [s, s + n) of the sub-array dims[depth..rank) at the leading
// indices prefix[0..depth), as a union of at most 2 * rank hyperslabs.
static void select_flat(hid_t space, int rank, const hsize_t *dims, int depth, hsize_t *prefix, hsize_t s, hsize_t n,
                        int *first) {
    if (n == 0) return;
    if (rank > 3 || depth >= rank) die(EXIT_FAILURE_OTHER, "internal: checkpoint selection of rank %d at depth %d", rank, depth);
    hsize_t start[3] = {0}, count[3] = {1, 1, 1};
    for (int d = 0; d < depth; d++) start[d] = prefix[d];
    if (depth == rank - 1) {
        start[depth] = s;
        count[depth] = n;
        hdf5Check(H5Sselect_hyperslab(space, *first ? H5S_SELECT_SET : H5S_SELECT_OR, start, NULL, count, NULL));
        *first = 0;
        return;
    }
    hsize_t inner = 1;
    for (int d = depth + 1; d < rank; d++) inner *= dims[d];
    hsize_t i = s / inner, off = s % inner;
    if (off) {   // the tail of a partial sub-array
        hsize_t m = n < inner - off ? n : inner - off;
        prefix[depth] = i;
        select_flat(space, rank, dims, depth + 1, prefix, off, m, first);
        n -= m;
        i++;
    }
    hsize_t full = n / inner;
    if (full) {  // whole sub-arrays in one hyperslab
        start[depth] = i;
        count[depth] = full;
        for (int d = depth + 1; d < rank; d++) { start[d] = 0; count[d] = dims[d]; }
        hdf5Check(H5Sselect_hyperslab(space, *first ? H5S_SELECT_SET : H5S_SELECT_OR, start, NULL, count, NULL));
        *first = 0;
        n -= full * inner;
        i += full;
    }
    if (n) {     // the head of a partial sub-array
        prefix[depth] = i;
        select_flat(space, rank, dims, depth + 1, prefix, 0, n, first);
    }
}

static hid_t file_selection(hid_t dset, const RunList *runs) {
    hid_t space = H5Dget_space(dset);
    hdf5Check(space);
    hsize_t dims[3];
    int rank = H5Sget_simple_extent_ndims(space);
    H5Sget_simple_extent_dims(space, dims, NULL);
    if (runs->total == 0) { hdf5Check(H5Sselect_none(space)); return space; }
    int first = 1;
    hsize_t prefix[3] = {0};
    for (int r = 0; r < runs->count; r++)
        select_flat(space, rank, dims, 0, prefix, runs->runs[r].flat, runs->runs[r].n, &first);
    return space;
}

static hid_t memory_space(size_t n) {
    hsize_t count = n ? n : 1;
    hid_t space = H5Screate_simple(1, &count, NULL);
    hdf5Check(space);
    if (n == 0) hdf5Check(H5Sselect_none(space));
    return space;
}

// ---- attributes ----------------------------------------------------------------------------
// The model shape's attributes, written at save and compared at load: X(key, value of shape s).
// A variant's or hook's switch stays 0 when the model does not use it, so files of every version
// compare alike.
#define SHAPE_IS_SGA(s) attention_is_sga((s)->attention)   // either form: checkpoints move between them
#define CHECKPOINT_SHAPE_ATTRS(X, s)                                                   \
    X("model.n_layer", (s)->n_layer)                                                  \
    X("model.n_head", (s)->n_head)                                                    \
    X("model.d_model", (s)->d_model)                                                  \
    X("model.seq_len", (s)->seq_len)                                                  \
    X("model.vocab_size", (s)->vocab_size)                                            \
    X("model.mlp_hidden", (s)->mlp_hidden)                                            \
    X("model.norm_post", (s)->norm == NORM_POST)                                      \
    X("model.tie_embeddings", (s)->tie_embeddings)                                    \
    X("model.r3si", (s)->cfg->r3si_enabled)                                           \
    X("model.r3si_inject", (s)->cfg->r3si_enabled && (s)->cfg->r3si_inject)           \
    X("model.sga", SHAPE_IS_SGA(s))                                                   \
    X("model.sga_spectral", SHAPE_IS_SGA(s) ? (s)->cfg->sga_spectral : 0)             \
    X("model.sga_fixed_filter", SHAPE_IS_SGA(s) ? (s)->cfg->sga_fixed_filter : 0)     \
    X("model.sga_blend", SHAPE_IS_SGA(s) ? (s)->cfg->sga_blend : 0)                   \
    X("model.sga_hidden", SHAPE_IS_SGA(s) ? (s)->cfg->sga_gate_hidden : 0)            \
    X("model.sga_embed", SHAPE_IS_SGA(s) ? (s)->cfg->sga_embed_dim : 0)

// The save path does not leave at a failing HDF5 call: under MPI every rank must make the same
// collective calls, and a rank that left early (or finalized MPI with the file open) would hang
// or crash the others. A failure is recorded here; the ranks agree after each dataset
// (any_rank_failed) and then all stop writing, skip the flush, close the file and report.
typedef struct {
    int failed;
    char where[160];
} SaveStatus;

static void save_check(SaveStatus *st, long long rc, const char *what) {
    if (rc >= 0 || st->failed) return;
    st->failed = 1;
    snprintf(st->where, sizeof st->where, "%s", what);
}

// Collective: whether a write failed on any rank. Once one has, every rank stops issuing writes
// together: HDF5's collective calls (a metadata flush) on ranks that saw different failures
// diverge and wait for each other for ever (seen under mpirun -np 2 with a full disk).
static int any_rank_failed(Comm *c, SaveStatus *st) {
    double failed = st->failed != 0;
    c->world_max(c, &failed, 1);
    if (failed && !st->failed) save_check(st, -1, "another rank's write");
    return failed != 0;
}

static void write_attr_double(hid_t obj, const char *name, double v, SaveStatus *st) {
    hid_t sp = H5Screate(H5S_SCALAR), a = H5Acreate2(obj, name, H5T_NATIVE_DOUBLE, sp, H5P_DEFAULT, H5P_DEFAULT);
    save_check(st, a, name);
    save_check(st, H5Awrite(a, H5T_NATIVE_DOUBLE, &v), name);
    H5Aclose(a); H5Sclose(sp);
}

static void write_checksum(hid_t dset, uint64_t sum, const char *name, SaveStatus *st) {
    hid_t sp = H5Screate(H5S_SCALAR), a = H5Acreate2(dset, CHECKSUM_ATTR, H5T_STD_U64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    save_check(st, a, name);
    save_check(st, H5Awrite(a, H5T_NATIVE_UINT64, &sum), name);
    H5Aclose(a); H5Sclose(sp);
}

static void write_attr_string(hid_t obj, const char *name, const char *text, SaveStatus *st) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    hid_t sp = H5Screate(H5S_SCALAR), a = H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    save_check(st, a, name);
    save_check(st, H5Awrite(a, type, &text), name);
    H5Aclose(a); H5Sclose(sp); H5Tclose(type);
}

static int read_attr_double(hid_t obj, const char *file, const char *name, double *v, Error *err) {
    if (H5Aexists(obj, name) <= 0) return error_set(err, "%s: missing attribute %s (not an entrank checkpoint?)", file, name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Aread(a, H5T_NATIVE_DOUBLE, v);
    if (a >= 0) H5Aclose(a);
    return rc < 0 ? error_set(err, "%s: unreadable attribute %s", file, name) : 0;
}

// A count attribute (step, adam_t, ...): finite, integral, in [0, max].
static int read_attr_count(hid_t obj, const char *file, const char *name, double max, double *v, Error *err) {
    if (read_attr_double(obj, file, name, v, err)) return -1;
    if (!(*v >= 0 && *v <= max && *v == floor(*v)))
        return error_set(err, "%s: attribute %s: %g is not an integer in [0, %.0f]", file, name, *v, max);
    return 0;
}

// ---- save ---------------------------------------------------------------------------------------

typedef enum { PART_PARAMS, PART_ADAM_M, PART_ADAM_V } Part;
static const char *PART_GROUP[] = {"params", "adam_m", "adam_v"};

// The runs of `id` this rank writes for `part`: parameters by replica 0 only (the others hold the
// same values); AdamW state by replica 0, or by every replica for its shard under ZeRO-1. The tied
// wte copy on the last stage is never written (stage 0 writes wte).
static RunList write_runs(const CheckpointTarget *t, int id, Part part) {
    const Model *m = t->model;
    RunList none = {0};
    if (id == PARAM_WTE && !m->has_embedding) return none;
    if (part == PART_PARAMS || !t->cfg->zero) return t->comm->dp_index == 0 ? owned_runs(m, id, 0, m->num_params) : none;
    return owned_runs(m, id, t->adam->begin, t->adam->begin + t->adam->numel);
}

// Host copy of the runs' elements, in flat order.
static float *gather_runs(const CheckpointTarget *t, const RunList *runs, Part part) {
    const Backend *be = t->model->be;
    float *host = xmalloc((runs->total ? runs->total : 1) * sizeof(float));
    size_t pos = 0;
    for (int r = 0; r < runs->count; r++) {
        const Run *run = &runs->runs[r];
        const void *src;
        if (part == PART_PARAMS) src = be_offset(be, t->model->params_mem, run->arena);
        else src = be_offset(be, part == PART_ADAM_M ? t->adam->m : t->adam->v, run->arena - t->adam->begin);
        be->download(host + pos, src, run->n);
        pos += run->n;
    }
    return host;
}

static void fsync_path(const char *path, int directory) {
    int fd = open(path, directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) die(EXIT_FAILURE_OTHER, "%s: cannot open for fsync: %s", path, strerror(errno));
    if (fsync(fd)) die(EXIT_FAILURE_OTHER, "%s: fsync failed: %s", path, strerror(errno));
    close(fd);
}

static void remove_old_checkpoints(const char *dir, int keep) {
    DIR *d = opendir(dir);
    if (!d) return;
    long steps[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096) {
        long s;
        char tail[8];
        // Complete checkpoints only: "step_%08ld.h5" exactly, never a .tmp being written.
        if (sscanf(e->d_name, "step_%ld.h%7s", &s, tail) == 2 && !strcmp(tail, "5")) steps[n++] = s;
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        int newer = 0;
        for (int j = 0; j < n; j++) newer += steps[j] > steps[i];
        if (newer >= keep) {
            char path[CFG_PATH_LEN + 64];
            snprintf(path, sizeof path, "%s/step_%08ld.h5", dir, steps[i]);
            unlink(path);
        }
    }
}

static R3si *r3si_of(const Model *m) { return model_hook_state(m, &BLOCK_HOOK_R3SI); }

// ---- R3SI buffers -----------------------------------------------------------------------------
// /r3si/rank (C), /r3si/alpha (C) and /r3si/V (C, D, k) for the C checkpoint layers, and the
// threshold state as attributes: identical on every replica, so replica 0 of each stage writes
// its layers' V and rank 0 the small vectors.

static void write_vector(hid_t group, const char *name, const double *v, int n, int writer, hid_t dxpl, SaveStatus *st) {
    hsize_t dims = (hsize_t)n;
    hid_t fspace = H5Screate_simple(1, &dims, NULL);
    hid_t dset = H5Dcreate2(group, name, H5T_NATIVE_DOUBLE, fspace, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    save_check(st, dset, name);
    hid_t mspace = memory_space(writer ? (size_t)n : 0);
    if (!writer) hdf5Check(H5Sselect_none(fspace));
    save_check(st, H5Dwrite(dset, H5T_NATIVE_DOUBLE, mspace, fspace, dxpl, v), name);
    // Every rank holds the same vector: each computes the whole checksum itself.
    write_checksum(dset, doubles_checksum(v, n), name, st);
    H5Sclose(mspace); H5Sclose(fspace); H5Dclose(dset);
}

// The runs of /r3si/V this rank holds: whole (D, k) slices of its stage's checkpoint layers.
static RunList r3si_v_runs(const CheckpointTarget *t) {
    const R3si *r = r3si_of(t->model);
    RunList l = {0};
    for (int c = 0; c < r->n_ckpt; c++)
        if (r->V[c]) runs_add(&l, (size_t)c, (size_t)c * r->D * r->k, (size_t)r->D * r->k);
    return l;
}

static void save_r3si(const CheckpointTarget *t, hid_t file, hid_t dxpl, SaveStatus *st) {
    const R3si *r = r3si_of(t->model);
    Comm *c = t->comm;
    write_attr_double(file, "r3si.tau", r->tau, st);
    write_attr_double(file, "r3si.rho_ref", r->rho_ref, st);
    write_attr_double(file, "r3si.rho", r->rho, st);
    write_attr_double(file, "r3si.monitors", r->monitors, st);
    write_attr_double(file, "r3si.n_ckpt", r->n_ckpt, st);
    hid_t group = H5Gcreate2(file, "r3si", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    save_check(st, group, "/r3si");
    double layers[CFG_MAX_LIST];
    for (int i = 0; i < r->n_ckpt; i++) layers[i] = r->layers[i];
    write_vector(group, "layers", layers, r->n_ckpt, c->world_rank == 0, dxpl, st);
    write_vector(group, "rank", r->rank, r->n_ckpt, c->world_rank == 0, dxpl, st);
    write_vector(group, "alpha", r->alpha, r->n_ckpt, c->world_rank == 0, dxpl, st);
    hsize_t dims[3] = {(hsize_t)r->n_ckpt, (hsize_t)r->D, (hsize_t)r->k};
    hid_t fspace = H5Screate_simple(3, dims, NULL);
    hid_t dset = H5Dcreate2(group, "V", H5T_NATIVE_FLOAT, fspace, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    save_check(st, dset, "/r3si/V");
    H5Sclose(fspace);
    RunList runs = {0};
    if (c->dp_index == 0) runs = r3si_v_runs(t);
    float *host = xmalloc((runs.total ? runs.total : 1) * sizeof(float));
    for (int i = 0, pos = 0; i < runs.count; pos += (int)runs.runs[i].n, i++)
        t->model->be->download(host + pos, r->V[runs.runs[i].arena], runs.runs[i].n);
    hid_t sel = dset < 0 ? -1 : file_selection(dset, &runs), mspace = memory_space(runs.total);
    save_check(st, H5Dwrite(dset, H5T_NATIVE_FLOAT, mspace, sel, dxpl, host), "/r3si/V");
    write_checksum(dset, world_sum_u64(runs_checksum(&runs, host)), "/r3si/V", st);
    if (sel >= 0) H5Sclose(sel);
    H5Sclose(mspace); H5Dclose(dset); H5Gclose(group);
    free(host); free(runs.runs);
}

// ---- load checks ----------------------------------------------------------------------------
// Every dataset read is checked before its values are used: element type, shape (by the caller),
// checksum (version >= 2) and the values' range. The verdicts depend only on the file and on sums
// over all ranks, so every rank reaches the same one and leaves the collective reads together.

typedef enum { VALUES_ANY_FINITE, VALUES_FINITE_NONNEGATIVE } ValueRule;

static int check_element_type(hid_t dset, const char *path, const char *name, size_t size, Error *err) {
    hid_t type = H5Dget_type(dset);
    int ok = type >= 0 && H5Tget_class(type) == H5T_FLOAT && H5Tget_size(type) == size;
    if (type >= 0) H5Tclose(type);
    return ok ? 0 : error_set(err, "%s: %s: element type is not float%d", path, name, (int)size * 8);
}

static int read_checksum(hid_t dset, const char *path, const char *name, uint64_t *sum, Error *err) {
    if (H5Aexists(dset, CHECKSUM_ATTR) <= 0) return error_set(err, "%s: %s: missing checksum attribute", path, name);
    hid_t a = H5Aopen(dset, CHECKSUM_ATTR, H5P_DEFAULT);
    hid_t type = a < 0 ? -1 : H5Aget_type(a);
    int ok = type >= 0 && H5Tget_class(type) == H5T_INTEGER && H5Tget_size(type) == 8 && H5Aread(a, H5T_NATIVE_UINT64, sum) >= 0;
    if (type >= 0) H5Tclose(type);
    if (a >= 0) H5Aclose(a);
    return ok ? 0 : error_set(err, "%s: %s: unreadable checksum attribute", path, name);
}

// `local` is this rank's part of the checksum (0 from ranks that do not count their elements) and
// `bad` its number of values outside the dataset's range: both are summed over the ranks.
static int verify_dataset(hid_t dset, const char *path, const char *name, int version, uint64_t local, uint64_t bad,
                          ValueRule rule, Error *err) {
    uint64_t mine[2] = {local, bad}, all[2];
    mpiCheck(MPI_Allreduce(mine, all, 2, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD));
    if (version >= 2) {
        uint64_t stored_sum;
        if (read_checksum(dset, path, name, &stored_sum, err)) return -1;
        if (stored_sum != all[0])
            return error_set(err, "%s: %s: checksum mismatch (stored %016llx, contents %016llx): the dataset is corrupt", path, name,
                             (unsigned long long)stored_sum, (unsigned long long)all[0]);
    }
    if (all[1])
        return error_set(err, "%s: %s: %llu values are %s", path, name, (unsigned long long)all[1],
                         rule == VALUES_FINITE_NONNEGATIVE ? "negative or not finite (AdamW's second moment is >= 0)" : "not finite");
    return 0;
}

static uint64_t count_bad(const float *v, size_t n, ValueRule rule) {
    uint64_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += !isfinite(v[i]) || (rule == VALUES_FINITE_NONNEGATIVE && v[i] < 0);
    return bad;
}

// The dimensions of a dataset, or -1.
static int dataset_dims(hid_t dset, hsize_t dims[3]) {
    hid_t space = H5Dget_space(dset);
    int rank = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    if (rank > 3) rank = -1;
    if (rank >= 0) H5Sget_simple_extent_dims(space, dims, NULL);
    if (space >= 0) H5Sclose(space);
    return rank;
}

static int load_r3si(const CheckpointTarget *t, hid_t file, const char *path, int version, hid_t dxpl, Error *err) {
    R3si *r = r3si_of(t->model);
    double n_ckpt, monitors;
    if (read_attr_count(file, path, "r3si.n_ckpt", CFG_MAX_LIST, &n_ckpt, err)) return -1;
    if ((int)n_ckpt != r->n_ckpt) return error_set(err, "%s: r3si.layers has %g checkpoint layers in the checkpoint but %d in the config", path, n_ckpt, r->n_ckpt);
    if (read_attr_double(file, path, "r3si.tau", &r->tau, err) || read_attr_double(file, path, "r3si.rho_ref", &r->rho_ref, err) ||
        read_attr_double(file, path, "r3si.rho", &r->rho, err) || read_attr_count(file, path, "r3si.monitors", 1e15, &monitors, err))
        return -1;
    if (!isfinite(r->tau) || !isfinite(r->rho_ref) || !isfinite(r->rho))
        return error_set(err, "%s: attribute r3si.tau, r3si.rho_ref or r3si.rho is not finite", path);
    r->monitors = (int)monitors;
    const char *names[3] = {"/r3si/layers", "/r3si/rank", "/r3si/alpha"};
    double vals[3][CFG_MAX_LIST];
    for (int i = 0; i < 3; i++) {
        if (H5Lexists(file, "r3si", H5P_DEFAULT) <= 0 || H5Lexists(file, names[i], H5P_DEFAULT) <= 0)
            return error_set(err, "%s: missing dataset %s", path, names[i]);
        hid_t d = H5Dopen2(file, names[i], H5P_DEFAULT);
        hsize_t dims[3];
        // The extent is checked before the read: vals holds the config's n_ckpt <= CFG_MAX_LIST values.
        int rank = dataset_dims(d, dims);
        if (rank != 1 || dims[0] != (hsize_t)r->n_ckpt) {
            H5Dclose(d);
            return error_set(err, "%s: %s: shape is not (%d) (the config's r3si.layers)", path, names[i], r->n_ckpt);
        }
        if (check_element_type(d, path, names[i], 8, err)) { H5Dclose(d); return -1; }
        herr_t rc = H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, dxpl, vals[i]);
        if (rc < 0) { H5Dclose(d); return error_set(err, "%s: cannot read dataset %s", path, names[i]); }
        uint64_t bad = 0;
        for (int c = 0; c < r->n_ckpt; c++) bad += !isfinite(vals[i][c]);
        // Every rank read the whole vector: rank 0's checksum stands for all.
        int vrc = verify_dataset(d, path, names[i], version, t->comm->world_rank == 0 ? doubles_checksum(vals[i], r->n_ckpt) : 0,
                                 t->comm->world_rank == 0 ? bad : 0, VALUES_ANY_FINITE, err);
        H5Dclose(d);
        if (vrc) return -1;
    }
    for (int c = 0; c < r->n_ckpt; c++) {
        if ((int)vals[0][c] != r->layers[c])
            return error_set(err, "%s: r3si.layers differ: the checkpoint's layer %d is %g, the config's %d", path, c, vals[0][c], r->layers[c]);
        r->rank[c] = vals[1][c];
        r->alpha[c] = vals[2][c];
    }
    if (H5Lexists(file, "/r3si/V", H5P_DEFAULT) <= 0) return error_set(err, "%s: missing dataset /r3si/V", path);
    hid_t dset = H5Dopen2(file, "/r3si/V", H5P_DEFAULT);
    hsize_t dims[3];
    if (dataset_dims(dset, dims) != 3 || dims[0] != (hsize_t)r->n_ckpt || dims[1] != (hsize_t)r->D || dims[2] != (hsize_t)r->k) {
        H5Dclose(dset);
        return error_set(err, "%s: /r3si/V: shape is not (%d, %d, %d)", path, r->n_ckpt, r->D, r->k);
    }
    if (check_element_type(dset, path, "/r3si/V", 4, err)) { H5Dclose(dset); return -1; }
    RunList runs = r3si_v_runs(t);
    float *host = xmalloc((runs.total ? runs.total : 1) * sizeof(float));
    hid_t sel = file_selection(dset, &runs), mspace = memory_space(runs.total);
    herr_t rc = H5Dread(dset, H5T_NATIVE_FLOAT, mspace, sel, dxpl, host);
    H5Sclose(sel); H5Sclose(mspace);
    int counts = t->comm->dp_index == 0;   // replica 0 of each stage holds each V exactly once
    if (rc >= 0)
        rc = verify_dataset(dset, path, "/r3si/V", version, counts ? runs_checksum(&runs, host) : 0,
                            counts ? count_bad(host, runs.total, VALUES_ANY_FINITE) : 0, VALUES_ANY_FINITE, err);
    else
        error_set(err, "%s: cannot read dataset /r3si/V (truncated or corrupt checkpoint)", path);
    H5Dclose(dset);
    if (rc >= 0)
        for (int i = 0, pos = 0; i < runs.count; pos += (int)runs.runs[i].n, i++)
            t->model->be->upload(r->V[runs.runs[i].arena], host + pos, runs.runs[i].n);
    free(host); free(runs.runs);
    return rc < 0 ? -1 : 0;
}

int checkpoint_save(const CheckpointTarget *t, const char *run_dir, CheckpointProgress progress, const char *config_text,
                    Error *err) {
    const Model *m = t->model;
    Comm *c = t->comm;
    char dir[CFG_PATH_LEN + 32], final[CFG_PATH_LEN + 64], tmp[CFG_PATH_LEN + 96];
    snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
    snprintf(final, sizeof final, "%s/step_%08ld.h5", dir, progress.step);
    snprintf(tmp, sizeof tmp, "%s.tmp", final);
    if (c->world_rank == 0 && mkdir(dir, 0775) && errno != EEXIST) die(EXIT_FAILURE_OTHER, "%s: cannot create: %s", dir, strerror(errno));
    c->barrier(c);

    // A disk without room for the file fails here, in one line, before any write: a write that
    // fails inside MPI-IO also prints the library's own lines.
    double no_room = 0;
    if (c->world_rank == 0) {
        double need = 0;
        for (int id = 0; id < m->n_params; id++)
            if (stored(m, id)) {
                hsize_t dims[3];
                int rank = logical_shape(m, id, dims);
                double n = 1;
                for (int d = 0; d < rank; d++) n *= (double)dims[d];
                need += 3 * 4 * n;
            }
        const R3si *r = r3si_of(m);
        if (r) need += 4.0 * r->n_ckpt * r->D * r->k;
        need += strlen(config_text) + (1 << 20);   // attributes and HDF5's own metadata
        struct statvfs fs;
        if (statvfs(dir, &fs) == 0 && (double)fs.f_bavail * (double)fs.f_frsize < need) {
            no_room = 1;
            error_set(err, "%s: cannot write checkpoint: %s: it needs about %.0f bytes and the file system has %.0f free", tmp,
                      strerror(ENOSPC), need, (double)fs.f_bavail * (double)fs.f_frsize);
        }
    }
    c->world_max(c, &no_room, 1);
    if (no_room) {
        if (c->world_rank != 0) error_set(err, "%s: cannot write checkpoint: no space left on the file system", tmp);
        return -1;
    }

    // A failing write is reported in one line below, not by HDF5's error stack.
    H5E_auto2_t old_func;
    void *old_data;
    H5Eget_auto2(H5E_DEFAULT, &old_func, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    SaveStatus st = {0};
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    hdf5Check(H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL));
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    save_check(&st, file, "create");
    H5Pclose(fapl);
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    hdf5Check(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));

    // Attributes and datasets are created collectively, with identical arguments on every rank.
    if (file >= 0) {
        write_attr_double(file, "format_version", FORMAT_VERSION, &st);
        write_attr_double(file, "step", (double)progress.step, &st);
        write_attr_double(file, "tokens", progress.tokens, &st);
        write_attr_double(file, "data_cursor", (double)progress.step, &st);   // the batch of step s is a function of (seed, s)
        // ... and of the sampler: a resume must use the same one (check_sampling_attr).
        write_attr_string(file, "data.sampling", t->cfg->data_sampling, &st);
        write_attr_double(file, "seed", (double)t->cfg->seed, &st);
        write_attr_double(file, "adam_t", (double)t->adam->t, &st);
        write_attr_double(file, "bad_in_row", (double)*t->bad_in_row, &st);
        write_attr_double(file, "dp", c->dp, &st);
        write_attr_double(file, "pp", c->pp, &st);
        write_attr_double(file, "zero", t->cfg->zero, &st);
        const ModelShape *s = &m->shape;
#define WRITE_SHAPE_ATTR(key, value) write_attr_double(file, key, (double)(value), &st);
        CHECKPOINT_SHAPE_ATTRS(WRITE_SHAPE_ATTR, s)
#undef WRITE_SHAPE_ATTR
        write_attr_string(file, "model.attention", s->attention->name, &st);
        write_attr_string(file, "config", config_text, &st);

        for (int part = 0; part < 3; part++) {
            hid_t group = H5Gcreate2(file, PART_GROUP[part], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            save_check(&st, group, PART_GROUP[part]);
            for (int id = 0; id < m->n_params; id++) {
                if (!stored(m, id)) continue;
                hsize_t dims[3];
                int rank = logical_shape(m, id, dims);
                hid_t fspace = H5Screate_simple(rank, dims, NULL);
                hid_t dset = H5Dcreate2(group, m->params[id].name, H5T_NATIVE_FLOAT, fspace, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
                save_check(&st, dset, m->params[id].name);
                H5Sclose(fspace);
                RunList runs = write_runs(t, id, (Part)part);
                float *host = gather_runs(t, &runs, (Part)part);
                hid_t sel = dset < 0 ? -1 : file_selection(dset, &runs), mspace = memory_space(runs.total);
                save_check(&st, H5Dwrite(dset, H5T_NATIVE_FLOAT, mspace, sel, dxpl, host), m->params[id].name);
                // write_runs partition the dataset: each element is hashed by the one rank writing it.
                write_checksum(dset, world_sum_u64(runs_checksum(&runs, host)), m->params[id].name, &st);
                if (sel >= 0) H5Sclose(sel);
                H5Sclose(mspace); H5Dclose(dset);
                free(host); free(runs.runs);
                if (any_rank_failed(c, &st)) break;
            }
            H5Gclose(group);
            if (st.failed) break;
        }
        if (!st.failed && r3si_of(m)) save_r3si(t, file, dxpl, &st);
        if (!any_rank_failed(c, &st)) save_check(&st, H5Fflush(file, H5F_SCOPE_GLOBAL), "flush");
        // A file that failed to write is emptied before it is closed: closing flushes metadata,
        // and with the disk still full that flush would fail too, leaving an open file that
        // HDF5 tries to close again inside MPI_Finalize (a crash). Emptied, the close succeeds.
        double failed_before_close = st.failed != 0;
        c->world_max(c, &failed_before_close, 1);
        if (failed_before_close && c->world_rank == 0 && truncate(tmp, 0) != 0) { /* the close reports it */ }
        c->barrier(c);
        double close_failed = H5Fclose(file) < 0;
        c->world_max(c, &close_failed, 1);   // the same collective sequence on every rank
        if (close_failed) {
            // Still open somewhere: the process cannot finalize MPI safely. One line, and out.
            if (c->world_rank == 0) {
                unlink(tmp);
                fprintf(stderr, "entrank: %s: cannot write checkpoint (%s): %s\n", tmp, st.failed ? st.where : "close",
                        "write failed (disk full or I/O error)");
            }
            _exit(EXIT_FAILURE_OTHER);
        }
    }
    H5Pclose(dxpl);
    H5Eset_auto2(H5E_DEFAULT, old_func, old_data);
    // All ranks agree whether the file is whole (0/1 flags: a maximum of a negative code over 0 would be 0).
    double failed = st.failed != 0;
    c->world_max(c, &failed, 1);
    if (failed) {
        // `latest` still names the previous complete checkpoint; the torn .tmp only costs space.
        if (c->world_rank == 0) unlink(tmp);
        if (st.failed)
            return error_set(err, "%s: cannot write checkpoint (at %s): write failed (disk full or I/O error)", tmp, st.where);
        return error_set(err, "%s: cannot write checkpoint: another rank's write failed", tmp);
    }
    const char *slow = getenv("ENTRANK_FAULT_CHECKPOINT_DELAY");
    // Fault injection for the tests: hold the finished-but-unpublished .tmp file for a while, so a
    // test can kill a rank exactly in the window between writing and publishing.
    if (slow) sleep((unsigned)atoi(slow));
    c->barrier(c);

    if (c->world_rank == 0) {
        fsync_path(tmp, 0);
        if (rename(tmp, final)) die(EXIT_FAILURE_OTHER, "%s: cannot rename to %s: %s", tmp, final, strerror(errno));
        fsync_path(dir, 1);
        char latest_tmp[CFG_PATH_LEN + 64], latest[CFG_PATH_LEN + 64];
        snprintf(latest, sizeof latest, "%s/latest", dir);
        snprintf(latest_tmp, sizeof latest_tmp, "%s/latest.tmp", dir);
        FILE *f = fopen(latest_tmp, "w");
        if (!f) die(EXIT_FAILURE_OTHER, "%s: cannot write: %s", latest_tmp, strerror(errno));
        fprintf(f, "step_%08ld.h5\n", progress.step);
        if (fflush(f) || fsync(fileno(f))) die(EXIT_FAILURE_OTHER, "%s: cannot flush: %s", latest_tmp, strerror(errno));
        fclose(f);
        if (rename(latest_tmp, latest)) die(EXIT_FAILURE_OTHER, "%s: cannot rename: %s", latest_tmp, strerror(errno));
        fsync_path(dir, 1);
        remove_old_checkpoints(dir, t->cfg->checkpoint_keep);
    }
    c->barrier(c);
    return 0;
}

// ---- load ---------------------------------------------------------------------------------------

int checkpoint_latest(const char *run_dir, char *path, size_t n) {
    char latest[CFG_PATH_LEN + 64], name[256];
    snprintf(latest, sizeof latest, "%s/checkpoints/latest", run_dir);
    FILE *f = fopen(latest, "r");
    if (!f) return 0;
    int ok = fscanf(f, "%255s", name) == 1;
    fclose(f);
    if (!ok) return 0;
    snprintf(path, n, "%s/checkpoints/%s", run_dir, name);
    return 1;
}

// The runs of `id` this rank reads for `part`: everything its stage holds (the tied copy on the
// last stage included), or its shard of the AdamW state under ZeRO-1.
static RunList read_runs(const CheckpointTarget *t, int id, Part part, int by_layer) {
    const Model *m = t->model;
    if (part == PART_PARAMS || !t->cfg->zero) return owned_runs_in(m, id, 0, m->num_params, by_layer);
    return owned_runs_in(m, id, t->adam->begin, t->adam->begin + t->adam->numel, by_layer);
}

static void scatter_runs(const CheckpointTarget *t, const RunList *runs, Part part, const float *host) {
    const Backend *be = t->model->be;
    size_t pos = 0;
    for (int r = 0; r < runs->count; r++) {
        const Run *run = &runs->runs[r];
        void *dst;
        if (part == PART_PARAMS) dst = be_offset(be, t->model->params_mem, run->arena);
        else dst = be_offset(be, part == PART_ADAM_M ? t->adam->m : t->adam->v, run->arena - t->adam->begin);
        be->upload(dst, host + pos, run->n);
        pos += run->n;
    }
}

// The variable-length string attribute `name` of obj into buf (truncated to n - 1 bytes); -1 when
// it is not one or cannot be read.
static int read_attr_text(hid_t obj, const char *name, char *buf, size_t n) {
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t type = H5Aget_type(a);
    char *text = NULL;
    herr_t rc = type >= 0 && H5Tis_variable_str(type) > 0 ? H5Aread(a, type, &text) : -1;
    if (rc >= 0 && text) {
        snprintf(buf, n, "%s", text);
        H5free_memory(text);
    }
    if (type >= 0) H5Tclose(type);
    H5Aclose(a);
    return rc < 0 ? -1 : 0;
}

// The attention variant: files from before the attribute existed knew sdpa and sga only, and
// model.sga tells those apart.
static int check_attention_attr(hid_t file, const char *path, const ModelShape *s, Error *err) {
    if (H5Aexists(file, "model.attention") <= 0) {
        // Either form (attention.fused) of either variant: the name is the variant.
        if (!strcmp(s->attention->name, "sdpa") || !strcmp(s->attention->name, "sga")) return 0;
        return error_set(err, "%s: model.attention is missing (sdpa or sga) but the config has attention.kind \"%s\"", path,
                         s->attention->name);
    }
    char name[CFG_NAME_LEN] = "";
    if (read_attr_text(file, "model.attention", name, sizeof name)) return error_set(err, "%s: unreadable attribute model.attention", path);
    if (strcmp(name, s->attention->name))
        return error_set(err, "%s: model.attention is \"%s\" in the checkpoint but \"%s\" in the config: the checkpoint belongs to another model",
                         path, name, s->attention->name);
    return 0;
}

// The training sampler (issue 20). A checkpoint from before the attribute existed was written by
// the random sampler. Resuming under another sampler would silently change which data the rest of
// the run sees, so it is refused; synthetic tasks ignore data.sampling and are not checked.
static int check_sampling_attr(hid_t file, const char *path, const Config *cfg, Error *err) {
    if (strcmp(cfg->data_kind, "llmc") && strcmp(cfg->data_kind, "megatron") && strcmp(cfg->data_kind, "text")) return 0;
    char name[CFG_NAME_LEN] = "random";
    if (H5Aexists(file, "data.sampling") > 0 && read_attr_text(file, "data.sampling", name, sizeof name))
        return error_set(err, "%s: unreadable attribute data.sampling", path);
    if (strcmp(name, cfg->data_sampling))
        return error_set(err, "%s: the run was trained with data.sampling = \"%s\" but the config has \"%s\": set data.sampling = \"%s\" "
                         "to continue it with the same data order, or start a new run (--resume never)",
                         path, name, cfg->data_sampling, name);
    return 0;
}

static int check_shape_attr(hid_t file, const char *path, const char *key, double expected, Error *err) {
    double v;
    if (read_attr_double(file, path, key, &v, err)) return -1;
    if (v != expected)
        return error_set(err, "%s: %s is %g in the checkpoint but %g in the config: the checkpoint belongs to another model",
                         path, key, v, expected);
    return 0;
}

int checkpoint_load(const CheckpointTarget *t, const char *path, int with_optimizer, CheckpointProgress *progress, Error *err) {
    Model *m = t->model;
    // Errors below are the file's, not the library's: keep HDF5's error stack off the terminal.
    H5E_auto2_t old_func;
    void *old_data;
    H5Eget_auto2(H5E_DEFAULT, &old_func, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    int rc = -1;
    hid_t file = -1, dxpl = -1;
    // A directory or a FIFO is not a checkpoint: say so here, before MPI-IO adds its own lines
    // (or blocks for ever on a FIFO).
    const char *why;
    if (regular_file_check(path, &why)) {
        error_set(err, "%s: cannot read checkpoint: %s%s", path, why, strncmp(why, "not a regular", 13) ? "" : ": a checkpoint is an HDF5 file");
        goto out;
    }
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL);
    file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (file < 0) { error_set(err, "%s: not a readable HDF5 file (truncated or corrupt checkpoint)", path); goto out; }
    const ModelShape *s = &m->shape;
    double fv;
    if (read_attr_double(file, path, "format_version", &fv, err)) goto out;
    if (fv != 1 && fv != FORMAT_VERSION) { error_set(err, "%s: format_version %g, this build reads 1 and %d", path, fv, FORMAT_VERSION); goto out; }
    int version = (int)fv;   // 1: written before checksums existed; its datasets load unverified
#define CHECK_SHAPE_ATTR(key, value) || check_shape_attr(file, path, key, (double)(value), err)
    if (0 CHECKPOINT_SHAPE_ATTRS(CHECK_SHAPE_ATTR, s) || check_attention_attr(file, path, s, err))
#undef CHECK_SHAPE_ATTR
        goto out;
    // Resuming training continues the data order; evaluating a checkpoint reads validation only.
    if (with_optimizer && check_sampling_attr(file, path, t->cfg, err)) goto out;
    double step = 0, tokens = 0, adam_t = 0, bad = 0;
    // Counts are doubles in the file: integral, non-negative and exact in a double (2^53).
    if (read_attr_count(file, path, "step", 9007199254740992.0, &step, err) ||
        read_attr_count(file, path, "tokens", 9007199254740992.0, &tokens, err) ||
        read_attr_count(file, path, "adam_t", step, &adam_t, err) || read_attr_count(file, path, "bad_in_row", step, &bad, err))
        goto out;
    dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    int parts = with_optimizer ? 3 : 1;
    for (int part = 0; part < parts; part++) {
        for (int id = 0; id < m->n_params; id++) {
            // The tied head of the last stage reads wte; an untied lm_head its own dataset.
            if (!stored(m, id)) continue;
            char name[128];
            snprintf(name, sizeof name, "/%s/%s", PART_GROUP[part], m->params[id].name);
            if (H5Lexists(file, PART_GROUP[part], H5P_DEFAULT) <= 0 || H5Lexists(file, name, H5P_DEFAULT) <= 0) {
                error_set(err, "%s: missing dataset %s", path, name);
                goto out;
            }
            hid_t dset = H5Dopen2(file, name, H5P_DEFAULT);
            hsize_t want[3], have[3];
            int rank = logical_shape(m, id, want);
            int have_rank = dataset_dims(dset, have);
            // Files written before W_s was stored for its layers only stack it over every layer.
            const ParamInfo *p = &m->params[id];
            int by_layer = p->role == ROLE_BLOCK && p->n_listed > 0 && have_rank == rank && have[0] == (hsize_t)s->n_layer &&
                           !memcmp(want + 1, have + 1, (size_t)(rank - 1) * sizeof(hsize_t));
            if (!by_layer && (have_rank != rank || memcmp(want, have, (size_t)rank * sizeof(hsize_t)))) {
                H5Dclose(dset);
                error_set(err, "%s: dataset %s has the wrong shape for this model", path, name);
                goto out;
            }
            if (check_element_type(dset, path, name, 4, err)) { H5Dclose(dset); goto out; }
            RunList runs = read_runs(t, id, (Part)part, by_layer);
            float *host = xmalloc((runs.total ? runs.total : 1) * sizeof(float));
            hid_t sel = file_selection(dset, &runs), mspace = memory_space(runs.total);
            herr_t r = H5Dread(dset, H5T_NATIVE_FLOAT, mspace, sel, dxpl, host);
            H5Sclose(sel); H5Sclose(mspace);
            if (r < 0) {
                H5Dclose(dset);
                free(host); free(runs.runs);
                error_set(err, "%s: cannot read dataset %s (truncated or corrupt checkpoint)", path, name);
                goto out;
            }
            // The elements this rank would write on this topology partition the dataset, so they
            // are the ones it hashes: replica 0's (or under ZeRO-1 each replica's shard of the
            // AdamW state), never the last stage's copy of a tied wte. The rows of an old
            // stacked-W_s file that no layer reads are not loaded and carry no checksum (version 1).
            int counts = !(id == PARAM_WTE && !m->has_embedding) && ((part == PART_PARAMS || !t->cfg->zero) ? t->comm->dp_index == 0 : 1);
            ValueRule rule = part == PART_ADAM_V ? VALUES_FINITE_NONNEGATIVE : VALUES_ANY_FINITE;
            int vrc = by_layer ? 0 : verify_dataset(dset, path, name, version, counts ? runs_checksum(&runs, host) : 0,
                                                    counts ? count_bad(host, runs.total, rule) : 0, rule, err);
            H5Dclose(dset);
            if (vrc) { free(host); free(runs.runs); goto out; }
            scatter_runs(t, &runs, (Part)part, host);
            free(host); free(runs.runs);
        }
    }
    if (r3si_of(m) && load_r3si(t, file, path, version, dxpl, err)) goto out;
    if (with_optimizer) {
        t->adam->t = (long)adam_t;
        *t->bad_in_row = (int)bad;
    }
    progress->step = (long)step;
    progress->tokens = tokens;
    rc = 0;
out:
    if (dxpl >= 0) H5Pclose(dxpl);
    if (file >= 0) H5Fclose(file);
    H5Eset_auto2(H5E_DEFAULT, old_func, old_data);
    return rc;
}

char *checkpoint_read_config(const char *path, Error *err) {
    H5E_auto2_t old_func;
    void *old_data;
    H5Eget_auto2(H5E_DEFAULT, &old_func, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    char *out = NULL;
    // Each rank reads the one attribute on its own (no MPI-IO): it is small and read-only.
    // Checked first: HDF5 would block for ever opening a FIFO.
    const char *why = NULL;
    hid_t file = regular_file_check(path, &why) ? -1 : H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        error_set(err, "%s: cannot read checkpoint: %s", path, why ? why : "not a readable HDF5 file");
    } else if (H5Aexists(file, "config") <= 0) {
        error_set(err, "%s: missing attribute config (not an entrank checkpoint?); give -c FILE", path);
    } else {
        hid_t a = H5Aopen(file, "config", H5P_DEFAULT), type = H5Aget_type(a);
        char *text = NULL;
        if (H5Tis_variable_str(type) > 0 && H5Aread(a, type, &text) >= 0 && text) {
            out = xmalloc(strlen(text) + 1);
            strcpy(out, text);
            H5free_memory(text);
        } else {
            error_set(err, "%s: unreadable attribute config", path);
        }
        H5Tclose(type);
        H5Aclose(a);
    }
    if (file >= 0) H5Fclose(file);
    H5Eset_auto2(H5E_DEFAULT, old_func, old_data);
    return out;
}
