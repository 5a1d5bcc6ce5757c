// metrics.c: the run's metrics.h5 (docs/metrics-schema.md; the contract is in metrics.h).
//
// The file is open only inside metrics_create, metrics_open_append and metrics_flush. Everything
// else works on an in-memory table of declared datasets, each with a queue of rows, so that the
// per-step cost is a memcpy and the file on disk is closed (and readable) between flushes.
//
// Layout: each dataset is float64 (int64 for a group's step axis, float16 where asked), shape
// (n, row_dims...), maxshape (unlimited, row_dims...), chunked along the first axis, with string
// attributes `description` and `units`, and optionally `axes` and int attributes `axis<k>_<name>`.
// Named axes with values are also HDF5 dimension scales (H5DS: `<group>/<axis name>`, int32,
// fixed size), and axis 0 is attached to `<group>/step` where the group has one, so that readers
// of dimension scales (HDFView, netCDF-4 readers such as h5netcdf) show named, labelled axes. The root group carries `config`, `config_json`,
// `revision`, `device`, `created` (strings) and `dp`, `pp` (int32). Strings are variable-length
// UTF-8 so that h5py reads them as str and the config text has no size limit (global heap).
//
// Only rank 0 writes this file, through HDF5's serial (sec2) driver: the dimension-scale
// attachments (metadata writes) need no collective call, unlike the checkpoints' MPI-IO files.
#include "metrics.h"

#include <hdf5.h>
#include <hdf5_hl.h>
#include <libconfig.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

// A flush that finds the file locked by a reader retries this many times, 100 ms apart, and then
// keeps its rows queued; close waits longer because nothing comes after it.
#define FLUSH_ATTEMPTS 5
#define CLOSE_ATTEMPTS 100
#define RETRY_MS 100
// Target chunk size: big enough that per-chunk overhead is small, small enough that a dataset
// with a handful of rows (eval) does not allocate much.
#define CHUNK_BYTES (64 * 1024)

// ----------------------------------------------------------------------------
// HDF5 helpers

// hdf5Check covers herr_t/htri_t; calls that return an id are checked here so the id is kept.
#define hidCheck(call) hid_check_((call), __FILE__, __LINE__, #call)
static void *xrealloc_array(void *p, size_t n, size_t size);

static hid_t hid_check_(hid_t id, const char *file, int line, const char *what) {
    if (id < 0) die(EXIT_FAILURE_OTHER, "HDF5 call failed at %s:%d: %s", file, line, what);
    return id;
}

// Saved state of HDF5's automatic error printing, turned off around calls whose failure is an
// expected outcome (a missing file, a file locked by a reader) that we report ourselves.
typedef struct {
    H5E_auto2_t func;
    void *data;
} ErrorPrinting;

static ErrorPrinting errors_quiet(void) {
    ErrorPrinting saved;
    hdf5Check(H5Eget_auto2(H5E_DEFAULT, &saved.func, &saved.data));
    hdf5Check(H5Eset_auto2(H5E_DEFAULT, NULL, NULL));
    return saved;
}

static void errors_restore(ErrorPrinting saved) {
    hdf5Check(H5Eset_auto2(H5E_DEFAULT, saved.func, saved.data));
}

// What the error stack says about the last failed call: the innermost message (it carries the
// errno text, e.g. "No such file or directory") and whether it was a file-lock conflict.
typedef struct {
    bool locked;
    bool have_msg;
    char msg[512];
} StackInfo;

static herr_t stack_walk_cb(unsigned n, const H5E_error2_t *e, void *data) {
    (void)n;
    StackInfo *si = data;
    if (e->min_num == H5E_CANTLOCKFILE) si->locked = true;
    if (!si->have_msg && e->desc != NULL) {
        snprintf(si->msg, sizeof si->msg, "%s", e->desc);
        si->have_msg = true;
    }
    return 0;
}

// Must run before anything else touches the error stack (H5Eset_auto2 included).
static StackInfo stack_info(void) {
    StackInfo si = {0};
    hdf5Check(H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, stack_walk_cb, &si));
    if (!si.have_msg) snprintf(si.msg, sizeof si.msg, "unknown HDF5 error");
    return si;
}

// SEMI close degree: H5Fclose fails if an object is still open, so a leaked id is an error here
// and not a file that silently stays open (and locked) until the process ends.
//
// File locking: the project's one mode is HDF5's default, locking on (metrics.h, docs/metrics-schema.md). The
// writer asks for it explicitly, best effort: on a file system without flock (some Lustre and NFS
// mounts) the open goes on unlocked instead of failing. HDF5_USE_FILE_LOCKING in the environment
// still overrides this for the writer as for every reader, so one process-wide setting decides.
static hid_t make_fapl(void) {
    hid_t fapl = hidCheck(H5Pcreate(H5P_FILE_ACCESS));
    hdf5Check(H5Pset_fclose_degree(fapl, H5F_CLOSE_SEMI));
#if H5_VERSION_GE(1, 10, 7)
    hdf5Check(H5Pset_file_locking(fapl, 1, 1));
#endif
    return fapl;
}

static void close_file(hid_t file, const char *path) {
    ssize_t n = H5Fget_obj_count(file, H5F_OBJ_ALL);  // counts the file itself too
    if (n < 0) die(EXIT_FAILURE_OTHER, "HDF5 call failed at %s:%d: H5Fget_obj_count", __FILE__, __LINE__);
    if (n != 1) die(EXIT_FAILURE_OTHER, "metrics: %zd HDF5 objects left open in %s before closing it", n - 1, path);
    hdf5Check(H5Fclose(file));
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

// Opens `path` read-write, retrying while another process holds its lock. Returns the file id,
// or a negative id with *locked set (still locked after `attempts`) or msg filled (other failure).
static hid_t open_for_write(const char *path, int attempts, bool *locked, char *msg, size_t msg_size) {
    hid_t fapl = make_fapl();
    hid_t file = H5I_INVALID_HID;
    *locked = false;
    for (int a = 0; a < attempts; a++) {
        if (a > 0) sleep_ms(RETRY_MS);
        ErrorPrinting saved = errors_quiet();
        file = H5Fopen(path, H5F_ACC_RDWR, fapl);
        StackInfo si = {0};
        if (file < 0) si = stack_info();
        errors_restore(saved);
        if (file >= 0) break;
        *locked = si.locked;
        snprintf(msg, msg_size, "%s", si.msg);
        if (!si.locked) break;  // only a lock conflict is worth waiting for
    }
    hdf5Check(H5Pclose(fapl));
    return file;
}

static void delete_attr_if_exists(hid_t obj, const char *name) {
    htri_t exists = H5Aexists(obj, name);
    hdf5Check(exists);
    if (exists > 0) hdf5Check(H5Adelete(obj, name));
}

// Scalar variable-length UTF-8 string attribute, replacing any attribute of that name.
static void write_str_attr(hid_t obj, const char *name, const char *value) {
    if (value == NULL) value = "";
    hid_t type = hidCheck(H5Tcopy(H5T_C_S1));
    hdf5Check(H5Tset_size(type, H5T_VARIABLE));
    hdf5Check(H5Tset_cset(type, H5T_CSET_UTF8));
    hid_t space = hidCheck(H5Screate(H5S_SCALAR));
    delete_attr_if_exists(obj, name);
    hid_t attr = hidCheck(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT));
    hdf5Check(H5Awrite(attr, type, &value));
    hdf5Check(H5Aclose(attr));
    hdf5Check(H5Sclose(space));
    hdf5Check(H5Tclose(type));
}

// int32 attribute: a scalar when n == 0 (one value read from v[0]), else a 1-D array of n values.
static void write_int_attr(hid_t obj, const char *name, const int *v, hsize_t n) {
    hid_t space = n == 0 ? hidCheck(H5Screate(H5S_SCALAR)) : hidCheck(H5Screate_simple(1, &n, NULL));
    delete_attr_if_exists(obj, name);
    hid_t attr = hidCheck(H5Acreate2(obj, name, H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT));
    hdf5Check(H5Awrite(attr, H5T_NATIVE_INT, v));
    hdf5Check(H5Aclose(attr));
    hdf5Check(H5Sclose(space));
}

// ----------------------------------------------------------------------------
// The resolved config as JSON (root attribute `config_json`): readers need no libconfig parser.
// libconfig's own parse of the text is walked: groups become objects, arrays and lists arrays,
// in the text's order; floats are written in the shortest form that reads back to the same double.

typedef struct {
    char *s;
    size_t n, cap;
} JsonBuf;

static void json_put(JsonBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void json_put(JsonBuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int len = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (len < 0) die(EXIT_FAILURE_OTHER, "metrics: cannot format the config as JSON");
        if ((size_t)len < b->cap - b->n) {
            b->n += (size_t)len;
            return;
        }
        b->cap = 2 * b->cap + (size_t)len + 64;
        b->s = xrealloc_array(b->s, b->cap, 1);
    }
}

static void json_string(JsonBuf *b, const char *s) {
    json_put(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') json_put(b, "\\%c", *p);
        else if (*p < 0x20) json_put(b, "\\u%04x", *p);
        else json_put(b, "%c", *p);
    }
    json_put(b, "\"");
}

static void json_setting(JsonBuf *b, const config_setting_t *s) {
    int type = config_setting_type(s);
    switch (type) {
    case CONFIG_TYPE_GROUP:
    case CONFIG_TYPE_ARRAY:
    case CONFIG_TYPE_LIST: {
        int group = type == CONFIG_TYPE_GROUP, n = config_setting_length(s);
        json_put(b, group ? "{" : "[");
        for (int i = 0; i < n; i++) {
            const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
            if (i) json_put(b, ", ");
            if (group) {
                json_string(b, config_setting_name(e));
                json_put(b, ": ");
            }
            json_setting(b, e);
        }
        json_put(b, group ? "}" : "]");
        break;
    }
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64: json_put(b, "%lld", config_setting_get_int64(s)); break;
    case CONFIG_TYPE_BOOL: json_put(b, "%s", config_setting_get_bool(s) ? "true" : "false"); break;
    case CONFIG_TYPE_STRING: json_string(b, config_setting_get_string(s)); break;
    case CONFIG_TYPE_FLOAT: {
        double v = config_setting_get_float(s);
        if (!isfinite(v)) {   // JSON has no inf/nan (the schema's ranges exclude them anyway)
            json_put(b, "null");
            break;
        }
        char num[40];
        for (int digits = 15; digits <= 17; digits++) {
            snprintf(num, sizeof num, "%.*g", digits, v);
            if (strtod(num, NULL) == v) break;
        }
        // A float stays a float for the reader: 1 -> 1.0
        json_put(b, "%s%s", num, strpbrk(num, ".eE") ? "" : ".0");
        break;
    }
    default: json_put(b, "null"); break;
    }
}

// The JSON text of libconfig `text` (malloc'd), or NULL with err set when libconfig rejects it.
static char *config_json(const char *text, Error *err) {
    config_t c;
    config_init(&c);
    if (!config_read_string(&c, text ? text : "")) {
        error_set(err, "the resolved config does not parse (line %d: %s)", config_error_line(&c), config_error_text(&c));
        config_destroy(&c);
        return NULL;
    }
    JsonBuf b = {xmalloc(256), 0, 256};
    b.s[0] = '\0';
    json_setting(&b, config_root_setting(&c));
    config_destroy(&c);
    return b.s;
}

// ----------------------------------------------------------------------------
// In-memory table

typedef struct {
    char *name;       // NULL: not named (reported as "step" / "dim<k>")
    int *values;      // NULL: no axis<k>_<name> attribute
    int n;
} MetricsAxis;

typedef struct {
    char *name;                   // absolute path, e.g. "/trace/attn_entropy"
    int rank;                     // row rank; the dataset has rank + 1 dims
    hsize_t dims[H5S_MAX_RANK];   // row dims, first `rank` entries
    size_t row_len;               // doubles per row
    char *description, *units;
    MetricsStorage storage;       // the file type when this run creates the dataset
    bool scales_done;             // step scale set / axis 0 attached in this process
    MetricsAxis *axes;            // rank + 1 entries
    bool on_disk;                 // the dataset exists in the file
    bool attrs_dirty;             // description/units still to write
    bool axes_dirty;              // axis attributes still to write
    double *queue;                // queued rows, row-major
    size_t queued, cap;           // in rows
} MetricsDataset;

// A dataset found in a reopened file, so that declare can check its shape without opening it.
typedef struct {
    char *name;
    int rank;                     // dataset rank (row rank + 1)
    hsize_t dims[H5S_MAX_RANK], maxdims[H5S_MAX_RANK];
    bool numeric;                 // float or integer: rows (doubles) convert to it
} ExistingDataset;

struct MetricsFile {
    char *path;
    MetricsDataset *ds;
    int n_ds, cap_ds;
    ExistingDataset *existing;
    int n_existing, cap_existing;
};

static MetricsDataset *find_ds(MetricsFile *mf, const char *name) {
    for (int i = 0; i < mf->n_ds; i++)
        if (strcmp(mf->ds[i].name, name) == 0) return &mf->ds[i];
    return NULL;
}

static MetricsDataset *must_find_ds(MetricsFile *mf, const char *name, const char *caller) {
    MetricsDataset *ds = find_ds(mf, name);
    if (ds == NULL) die(EXIT_FAILURE_OTHER, "%s: metrics dataset %s was not declared", caller, name);
    return ds;
}

static const ExistingDataset *find_existing(const MetricsFile *mf, const char *name) {
    for (int i = 0; i < mf->n_existing; i++)
        if (strcmp(mf->existing[i].name, name) == 0) return &mf->existing[i];
    return NULL;
}

static void *xrealloc_array(void *p, size_t n, size_t size) {
    if (size != 0 && n > SIZE_MAX / size) die(EXIT_FAILURE_OTHER, "metrics: allocation size overflow");
    p = realloc(p, n * size != 0 ? n * size : 1);
    CHECK_ALLOC(p);
    return p;
}

// "[3, 4]" for error messages.
static void format_dims(char *buf, size_t size, int rank, const hsize_t *dims) {
    size_t off = (size_t)snprintf(buf, size, "[");
    for (int k = 0; k < rank && off < size; k++)
        off += (size_t)snprintf(buf + off, size - off, "%s%llu", k ? ", " : "", (unsigned long long)dims[k]);
    if (off < size) snprintf(buf + off, size - off, "]");
}

static MetricsFile *new_file(const char *path) {
    MetricsFile *mf = xcalloc(1, sizeof *mf);
    mf->path = xstrdup(path);
    return mf;
}

static void free_file(MetricsFile *mf) {
    for (int i = 0; i < mf->n_ds; i++) {
        MetricsDataset *ds = &mf->ds[i];
        for (int k = 0; k <= ds->rank; k++) {
            free(ds->axes[k].name);
            free(ds->axes[k].values);
        }
        free(ds->axes);
        free(ds->name);
        free(ds->description);
        free(ds->units);
        free(ds->queue);
    }
    for (int i = 0; i < mf->n_existing; i++) free(mf->existing[i].name);
    free(mf->ds);
    free(mf->existing);
    free(mf->path);
    free(mf);
}

// ----------------------------------------------------------------------------
// Create / reopen

// The root attributes that describe the run (all but `created`), on an open file.
static void write_run_info(hid_t file, const MetricsRunInfo *info, const char *json) {
    // Attributes on the file id land on the root group.
    write_str_attr(file, "config", info->config_text);
    write_str_attr(file, "config_json", json);
    write_str_attr(file, "revision", info->revision);
    write_str_attr(file, "device", info->device);
    write_int_attr(file, "dp", &info->dp, 0);
    write_int_attr(file, "pp", &info->pp, 0);
}

int metrics_set_run_info(const char *path, const MetricsRunInfo *info, Error *err) {
    char *json = config_json(info->config_text, err);
    if (json == NULL) return -1;
    bool locked;
    char msg[512];
    hid_t file = open_for_write(path, CLOSE_ATTEMPTS, &locked, msg, sizeof msg);
    if (file < 0) {
        free(json);
        return error_set(err, "cannot reopen metrics file %s: %s", path, msg);
    }
    write_run_info(file, info, json);
    close_file(file, path);
    free(json);
    return 0;
}

MetricsFile *metrics_create(const char *path, const MetricsRunInfo *info, Error *err) {
    char *json = config_json(info->config_text, err);
    if (json == NULL) return NULL;
    hid_t fapl = make_fapl();
    ErrorPrinting saved = errors_quiet();
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    StackInfo si = {0};
    if (file < 0) si = stack_info();
    errors_restore(saved);
    hdf5Check(H5Pclose(fapl));
    if (file < 0) {
        error_set(err, "cannot create metrics file %s: %s%s", path, si.msg,
                  si.locked ? " (another process has it open)" : "");
        free(json);
        return NULL;
    }

    char created[32];
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm) == NULL || strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(created, sizeof created, "unknown");

    write_run_info(file, info, json);
    free(json);
    write_str_attr(file, "created", created);
    close_file(file, path);
    return new_file(path);
}

static herr_t visit_cb(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    MetricsFile *mf = data;
    if (info->type != H5L_TYPE_HARD) return 0;
    hid_t obj = hidCheck(H5Oopen(group, name, H5P_DEFAULT));
    H5I_type_t kind = H5Iget_type(obj);
    if (kind == H5I_BADID) die(EXIT_FAILURE_OTHER, "HDF5 call failed at %s:%d: H5Iget_type", __FILE__, __LINE__);
    if (kind == H5I_DATASET) {
        if (mf->n_existing == mf->cap_existing) {
            mf->cap_existing = mf->cap_existing ? 2 * mf->cap_existing : 32;
            mf->existing = xrealloc_array(mf->existing, (size_t)mf->cap_existing, sizeof *mf->existing);
        }
        ExistingDataset *e = &mf->existing[mf->n_existing++];
        memset(e, 0, sizeof *e);
        size_t len = strlen(name);
        e->name = xmalloc(len + 2);
        e->name[0] = '/';  // visit names are relative to the root group
        memcpy(e->name + 1, name, len + 1);
        hid_t space = hidCheck(H5Dget_space(obj));
        e->rank = H5Sget_simple_extent_ndims(space);
        hdf5Check(e->rank);
        hdf5Check(H5Sget_simple_extent_dims(space, e->dims, e->maxdims));
        hdf5Check(H5Sclose(space));
        hid_t type = hidCheck(H5Dget_type(obj));
        H5T_class_t cls = H5Tget_class(type);
        hdf5Check(cls);
        e->numeric = cls == H5T_FLOAT || cls == H5T_INTEGER;
        hdf5Check(H5Tclose(type));
    }
    hdf5Check(H5Oclose(obj));
    return 0;
}

MetricsFile *metrics_open_append(const char *path, Error *err) {
    bool locked;
    char msg[512];
    hid_t file = open_for_write(path, CLOSE_ATTEMPTS, &locked, msg, sizeof msg);
    if (file < 0) {
        error_set(err, "cannot reopen metrics file %s: %s%s", path, msg,
                  locked ? " (another process keeps it open)" : "");
        return NULL;
    }
    // Refuse to append to an HDF5 file that metrics_create did not make (a checkpoint, say).
    htri_t is_metrics = H5Aexists(file, "created");
    hdf5Check(is_metrics);
    if (is_metrics == 0) {
        close_file(file, path);
        error_set(err, "cannot reopen metrics file %s: it has no root attribute 'created' (not a metrics file)", path);
        return NULL;
    }
    MetricsFile *mf = new_file(path);
    hdf5Check(H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, visit_cb, mf));
    close_file(file, path);
    return mf;
}

// ----------------------------------------------------------------------------
// Declare / axes / append

// A group's step axis: the dataset named `step` (/steps/step, /trace/step, /r3si/step, ...).
static bool is_step_axis(const char *name) {
    const char *base = strrchr(name, '/');
    return base != NULL && strcmp(base + 1, "step") == 0;
}

// "/trace" of "/trace/attn_entropy" into buf ("" for a dataset in the root group).
static void group_of(const char *name, char *buf, size_t size) {
    size_t n = (size_t)(strrchr(name, '/') - name);
    if (n >= size) die(EXIT_FAILURE_OTHER, "metrics: dataset name %s too long", name);
    memcpy(buf, name, n);
    buf[n] = '\0';
}

static void check_name(const char *name, const char *caller) {
    if (name == NULL || name[0] != '/' || name[1] == '\0' || name[strlen(name) - 1] == '/' || strstr(name, "//"))
        die(EXIT_FAILURE_OTHER, "%s: bad metrics dataset name '%s' (want an absolute path like /steps/loss)",
            caller, name ? name : "(null)");
}

int metrics_try_declare(MetricsFile *mf, const char *name, int row_rank, const size_t *row_dims,
                        const char *description, const char *units, Error *err) {
    check_name(name, "metrics_declare");
    if (find_ds(mf, name)) die(EXIT_FAILURE_OTHER, "metrics_declare: %s declared twice", name);
    if (row_rank < 0 || row_rank >= H5S_MAX_RANK)
        die(EXIT_FAILURE_OTHER, "metrics_declare: %s: row rank %d out of range", name, row_rank);

    hsize_t dims[H5S_MAX_RANK] = {0};
    size_t row_len = 1;
    for (int k = 0; k < row_rank; k++) {
        if (row_dims[k] == 0) die(EXIT_FAILURE_OTHER, "metrics_declare: %s: row dim %d is 0", name, k);
        if (row_len > SIZE_MAX / row_dims[k] / sizeof(double))
            die(EXIT_FAILURE_OTHER, "metrics_declare: %s: row too large", name);
        dims[k] = (hsize_t)row_dims[k];
        row_len *= row_dims[k];
    }
    // HDF5 chunks are limited to 4 GiB, and a chunk holds at least one row.
    if ((uint64_t)row_len * sizeof(double) >= (UINT64_C(1) << 32))
        die(EXIT_FAILURE_OTHER, "metrics_declare: %s: a row of %zu doubles exceeds HDF5's 4 GiB chunk limit", name, row_len);

    const ExistingDataset *e = find_existing(mf, name);
    if (e != NULL) {
        bool same = e->numeric && e->rank == row_rank + 1 && e->maxdims[0] == H5S_UNLIMITED;
        for (int k = 0; same && k < row_rank; k++) same = e->dims[k + 1] == dims[k];
        if (!same) {
            char have[256], want[256];
            format_dims(have, sizeof have, e->rank - 1, e->dims + 1);
            format_dims(want, sizeof want, row_rank, dims);
            return error_set(err, "metrics file %s: dataset %s has rows of shape %s%s, the run declares %s",
                             mf->path, name, have,
                             e->numeric && e->maxdims[0] == H5S_UNLIMITED ? "" : " (or is not an extendable numeric dataset)",
                             want);
        }
    }

    if (mf->n_ds == mf->cap_ds) {
        mf->cap_ds = mf->cap_ds ? 2 * mf->cap_ds : 32;
        mf->ds = xrealloc_array(mf->ds, (size_t)mf->cap_ds, sizeof *mf->ds);
    }
    MetricsDataset *ds = &mf->ds[mf->n_ds++];
    memset(ds, 0, sizeof *ds);
    ds->name = xstrdup(name);
    ds->rank = row_rank;
    memcpy(ds->dims, dims, sizeof dims);
    ds->row_len = row_len;
    ds->description = xstrdup(description ? description : "");
    ds->units = xstrdup(units ? units : "");
    ds->storage = is_step_axis(name) ? METRICS_I64 : METRICS_F64;
    ds->axes = xcalloc((size_t)row_rank + 1, sizeof *ds->axes);
    ds->on_disk = e != NULL;
    ds->attrs_dirty = true;  // also for an existing dataset: the run's text is the current one
    return 0;
}

void metrics_declare(MetricsFile *mf, const char *name, int row_rank, const size_t *row_dims,
                     const char *description, const char *units) {
    Error err;
    if (metrics_try_declare(mf, name, row_rank, row_dims, description, units, &err) < 0)
        die(EXIT_BAD_INPUT, "%s", err.msg);
}

void metrics_set_axis(MetricsFile *mf, const char *name, int axis, const char *axis_name,
                      const int *values, int n) {
    MetricsDataset *ds = must_find_ds(mf, name, "metrics_set_axis");
    if (axis < 0 || axis > ds->rank)
        die(EXIT_FAILURE_OTHER, "metrics_set_axis: %s has axes 0..%d, not %d", name, ds->rank, axis);
    if (axis_name == NULL || axis_name[0] == '\0' || strchr(axis_name, ','))
        die(EXIT_FAILURE_OTHER, "metrics_set_axis: %s: bad axis name", name);
    // Axis 0 grows with every row, so it can be named but carries no index values.
    if (values != NULL && (axis == 0 || (hsize_t)n != ds->dims[axis - 1]))
        die(EXIT_FAILURE_OTHER, "metrics_set_axis: %s axis %d: %d values for a dim of %llu", name, axis, n,
            axis == 0 ? 0ULL : (unsigned long long)ds->dims[axis - 1]);
    MetricsAxis *ax = &ds->axes[axis];
    free(ax->name);
    free(ax->values);
    ax->name = xstrdup(axis_name);
    ax->values = NULL;
    ax->n = 0;
    if (values != NULL) {
        ax->values = xmalloc((size_t)n * sizeof(int));
        memcpy(ax->values, values, (size_t)n * sizeof(int));
        ax->n = n;
    }
    ds->axes_dirty = true;
}

void metrics_set_storage(MetricsFile *mf, const char *name, MetricsStorage storage) {
    MetricsDataset *ds = must_find_ds(mf, name, "metrics_set_storage");
    ds->storage = storage;
}

void metrics_append(MetricsFile *mf, const char *name, const double *row) {
    MetricsDataset *ds = must_find_ds(mf, name, "metrics_append");
    if (ds->queued == ds->cap) {
        ds->cap = ds->cap ? 2 * ds->cap : 16;
        ds->queue = xrealloc_array(ds->queue, ds->cap, ds->row_len * sizeof(double));
    }
    memcpy(ds->queue + ds->queued * ds->row_len, row, ds->row_len * sizeof(double));
    ds->queued++;
}

size_t metrics_queued_rows(const MetricsFile *mf) {
    size_t n = 0;
    for (int i = 0; i < mf->n_ds; i++) n += mf->ds[i].queued;
    return n;
}

// ----------------------------------------------------------------------------
// Flush

// The file type of a storage class (a copy to close). IEEE half: 1 sign, 5 exponent (bias 15) and
// 10 mantissa bits, little-endian, built from float32 as HDF5 1.10 has no predefined half type.
static hid_t storage_type(MetricsStorage storage) {
    if (storage == METRICS_I64) return hidCheck(H5Tcopy(H5T_STD_I64LE));
    if (storage == METRICS_F64) return hidCheck(H5Tcopy(H5T_IEEE_F64LE));
    hid_t t = hidCheck(H5Tcopy(H5T_IEEE_F32LE));
    hdf5Check(H5Tset_fields(t, 15, 10, 5, 0, 10));
    hdf5Check(H5Tset_size(t, 2));
    hdf5Check(H5Tset_ebias(t, 15));
    return t;
}

static void create_dataset(hid_t file, MetricsDataset *ds) {
    int rank = ds->rank + 1;
    hsize_t dims[H5S_MAX_RANK], maxdims[H5S_MAX_RANK], chunk[H5S_MAX_RANK];
    hid_t ftype = storage_type(ds->storage);
    size_t row_bytes = ds->row_len * H5Tget_size(ftype);
    dims[0] = 0;
    maxdims[0] = H5S_UNLIMITED;
    chunk[0] = row_bytes >= CHUNK_BYTES ? 1 : CHUNK_BYTES / row_bytes;
    for (int k = 0; k < ds->rank; k++) dims[k + 1] = maxdims[k + 1] = chunk[k + 1] = ds->dims[k];

    hid_t space = hidCheck(H5Screate_simple(rank, dims, maxdims));
    hid_t dcpl = hidCheck(H5Pcreate(H5P_DATASET_CREATE));
    hdf5Check(H5Pset_chunk(dcpl, rank, chunk));
    hid_t lcpl = hidCheck(H5Pcreate(H5P_LINK_CREATE));
    hdf5Check(H5Pset_create_intermediate_group(lcpl, 1));  // "/trace/x" creates "/trace" as needed
    hid_t dset = hidCheck(H5Dcreate2(file, ds->name, ftype, space, lcpl, dcpl, H5P_DEFAULT));
    hdf5Check(H5Dclose(dset));
    hdf5Check(H5Tclose(ftype));
    hdf5Check(H5Pclose(lcpl));
    hdf5Check(H5Pclose(dcpl));
    hdf5Check(H5Sclose(space));
    ds->on_disk = true;
}

// The dimension scale <group>/<axis name> holding `values`, created on first use (int32, fixed
// size: a resumed run's rewind leaves it alone), its id open for the caller to attach and close.
static hid_t axis_scale(hid_t file, const MetricsDataset *ds, const MetricsAxis *ax) {
    char path[512], group[256];
    group_of(ds->name, group, sizeof group);
    if (snprintf(path, sizeof path, "%s/%s", group, ax->name) >= (int)sizeof path)
        die(EXIT_FAILURE_OTHER, "metrics: scale name of %s too long", ds->name);
    ErrorPrinting quiet = errors_quiet();
    htri_t exists = H5Lexists(file, path, H5P_DEFAULT);
    errors_restore(quiet);
    hsize_t n = (hsize_t)ax->n;
    if (exists > 0) {
        hid_t sid = hidCheck(H5Dopen2(file, path, H5P_DEFAULT));
        hid_t space = hidCheck(H5Dget_space(sid));
        hssize_t have = H5Sget_simple_extent_npoints(space);
        hdf5Check(H5Sclose(space));
        if (have != (hssize_t)n || H5DSis_scale(sid) <= 0)
            die(EXIT_BAD_INPUT, "metrics file: %s has %lld values (or is no dimension scale); %s names its axis '%s' with %d "
                "(a resumed run with another shape?)", path, (long long)have, ds->name, ax->name, ax->n);
        int *old = xmalloc((size_t)n * sizeof(int));
        hdf5Check(H5Dread(sid, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, old));
        if (memcmp(old, ax->values, (size_t)n * sizeof(int)) != 0) {
            // Same size, other values (e.g. trace.snapshot_layers changed at a resume): the scale
            // describes the rows this run writes from now on; earlier rows keep their own meaning.
            fprintf(stderr, "entrank: warning: %s: the axis values changed since the file was written; the scale now "
                            "holds this run's values\n", path);
            hdf5Check(H5Dwrite(sid, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, ax->values));
        }
        free(old);
        return sid;
    }
    hid_t space = hidCheck(H5Screate_simple(1, &n, NULL));
    hid_t lcpl = hidCheck(H5Pcreate(H5P_LINK_CREATE));
    hdf5Check(H5Pset_create_intermediate_group(lcpl, 1));
    hid_t sid = hidCheck(H5Dcreate2(file, path, H5T_STD_I32LE, space, lcpl, H5P_DEFAULT, H5P_DEFAULT));
    hdf5Check(H5Pclose(lcpl));
    hdf5Check(H5Sclose(space));
    hdf5Check(H5Dwrite(sid, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, ax->values));
    hdf5Check(H5DSset_scale(sid, ax->name));
    char description[300];
    snprintf(description, sizeof description, "values of the '%s' axis (dimension scale)", ax->name);
    write_str_attr(sid, "description", description);
    write_str_attr(sid, "units", "index");
    return sid;
}

static void attach(hid_t dset, hid_t scale, unsigned k) {
    htri_t attached = H5DSis_attached(dset, scale, k);
    hdf5Check(attached);
    if (!attached) hdf5Check(H5DSattach_scale(dset, scale, k));
}

// A group's step dataset becomes a dimension scale, and axis 0 of the group's other datasets is
// attached to it: once per dataset and process (files from before this convention get it too).
static void step_scales(hid_t file, MetricsFile *mf, MetricsDataset *ds, hid_t dset) {
    if (ds->scales_done) return;
    ds->scales_done = true;
    if (is_step_axis(ds->name)) {
        htri_t is = H5DSis_scale(dset);
        hdf5Check(is);
        if (!is) hdf5Check(H5DSset_scale(dset, "step"));
        return;
    }
    char group[256], step[300];
    group_of(ds->name, group, sizeof group);
    snprintf(step, sizeof step, "%s/step", group);
    MetricsDataset *s = find_ds(mf, step);
    if (s == NULL || !s->on_disk) return;
    if (ds->axes[0].name == NULL) hdf5Check(H5DSset_label(dset, 0, "step"));
    hid_t sid = hidCheck(H5Dopen2(file, step, H5P_DEFAULT));
    htri_t is = H5DSis_scale(sid);
    hdf5Check(is);
    if (!is) hdf5Check(H5DSset_scale(sid, "step"));
    attach(dset, sid, 0);
    hdf5Check(H5Dclose(sid));
    // netCDF-4 readers (h5netcdf, so xarray) refuse a dataset whose axes are partly scales: an axis
    // the caller left without values gets the indices 0..n-1 as its scale, named after the axis or,
    // unnamed, "<dataset>_dim<k>" (unique in its group).
    for (int k = 1; k <= ds->rank; k++) {
        if (ds->axes[k].values != NULL) continue;
        MetricsAxis ax = {NULL, NULL, (int)ds->dims[k - 1]};
        char fallback[300];
        snprintf(fallback, sizeof fallback, "%s_dim%d", strrchr(ds->name, '/') + 1, k);
        ax.name = ds->axes[k].name ? ds->axes[k].name : fallback;
        ax.values = xmalloc((size_t)ax.n * sizeof(int));
        for (int i = 0; i < ax.n; i++) ax.values[i] = i;
        hid_t scale = axis_scale(file, ds, &ax);
        attach(dset, scale, (unsigned)k);
        hdf5Check(H5Dclose(scale));
        free(ax.values);
    }
}

static void write_axes(hid_t file, hid_t dset, const MetricsDataset *ds) {
    char axes[1024] = "";
    size_t off = 0;
    for (int k = 0; k <= ds->rank; k++) {
        const MetricsAxis *ax = &ds->axes[k];
        char fallback[16];
        snprintf(fallback, sizeof fallback, k == 0 ? "step" : "dim%d", k);
        const char *axis_name = ax->name ? ax->name : fallback;
        if (off < sizeof axes) off += (size_t)snprintf(axes + off, sizeof axes - off, "%s%s", k ? "," : "", axis_name);
        if (ax->name != NULL) hdf5Check(H5DSset_label(dset, (unsigned)k, ax->name));
        if (ax->values != NULL) {
            char attr_name[256];
            snprintf(attr_name, sizeof attr_name, "axis%d_%s", k, ax->name);
            write_int_attr(dset, attr_name, ax->values, (hsize_t)ax->n);
            hid_t sid = axis_scale(file, ds, ax);
            attach(dset, sid, (unsigned)k);
            hdf5Check(H5Dclose(sid));
        }
    }
    if (off >= sizeof axes) die(EXIT_FAILURE_OTHER, "metrics: axis names of %s too long", ds->name);
    write_str_attr(dset, "axes", axes);
}

// Extends the dataset by the queued rows and writes them after its current length (read from the
// file, so a reopened file continues where it ended).
static void append_rows(hid_t dset, MetricsDataset *ds) {
    int rank = ds->rank + 1;
    hsize_t cur[H5S_MAX_RANK], start[H5S_MAX_RANK] = {0}, count[H5S_MAX_RANK];
    hid_t space = hidCheck(H5Dget_space(dset));
    int file_rank = H5Sget_simple_extent_ndims(space);
    hdf5Check(file_rank);
    if (file_rank != rank) die(EXIT_FAILURE_OTHER, "metrics: %s has rank %d on disk, expected %d", ds->name, file_rank, rank);
    hdf5Check(H5Sget_simple_extent_dims(space, cur, NULL));
    hdf5Check(H5Sclose(space));

    start[0] = cur[0];
    count[0] = (hsize_t)ds->queued;
    for (int k = 1; k < rank; k++) count[k] = cur[k];
    cur[0] += (hsize_t)ds->queued;
    hdf5Check(H5Dset_extent(dset, cur));

    hid_t fspace = hidCheck(H5Dget_space(dset));
    hdf5Check(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL));
    hid_t mspace = hidCheck(H5Screate_simple(rank, count, NULL));
    hdf5Check(H5Dwrite(dset, H5T_NATIVE_DOUBLE, mspace, fspace, H5P_DEFAULT, ds->queue));
    hdf5Check(H5Sclose(mspace));
    hdf5Check(H5Sclose(fspace));
    ds->queued = 0;
}

static bool has_pending(const MetricsFile *mf) {
    for (int i = 0; i < mf->n_ds; i++) {
        const MetricsDataset *ds = &mf->ds[i];
        if (!ds->on_disk || !ds->scales_done || ds->attrs_dirty || ds->axes_dirty || ds->queued > 0) return true;
    }
    return false;
}

// Writes everything pending. Returns false (nothing written) when the file stayed locked by
// another process for `attempts` tries; any other failure dies.
static bool flush_try(MetricsFile *mf, int attempts) {
    if (!has_pending(mf)) return true;
    bool locked;
    char msg[512];
    hid_t file = open_for_write(mf->path, attempts, &locked, msg, sizeof msg);
    if (file < 0) {
        if (locked) return false;
        die(EXIT_FAILURE_OTHER, "cannot open metrics file %s for writing: %s", mf->path, msg);
    }
    // Every dataset exists before any axis is attached (a group's step scale included).
    for (int i = 0; i < mf->n_ds; i++)
        if (!mf->ds[i].on_disk) create_dataset(file, &mf->ds[i]);
    for (int i = 0; i < mf->n_ds; i++) {
        MetricsDataset *ds = &mf->ds[i];
        if (ds->scales_done && !ds->attrs_dirty && !ds->axes_dirty && ds->queued == 0) continue;
        hid_t dset = hidCheck(H5Dopen2(file, ds->name, H5P_DEFAULT));
        step_scales(file, mf, ds, dset);
        if (ds->attrs_dirty) {
            write_str_attr(dset, "description", ds->description);
            write_str_attr(dset, "units", ds->units);
            ds->attrs_dirty = false;
        }
        if (ds->axes_dirty) {
            write_axes(file, dset, ds);
            ds->axes_dirty = false;
        }
        if (ds->queued > 0) append_rows(dset, ds);
        hdf5Check(H5Dclose(dset));
    }
    close_file(file, mf->path);
    return true;
}

void metrics_flush(MetricsFile *mf) {
    if (!flush_try(mf, FLUSH_ATTEMPTS))
        fprintf(stderr, "entrank: warning: %s is held open by another process (a reader?); "
                        "%zu metric rows stay queued for the next flush\n", mf->path, metrics_queued_rows(mf));
}

// A reader that keeps the file open past the end of the run costs the last rows, not the run's
// exit code: close runs on the requeue path too, where exit 3 must survive.
void metrics_close(MetricsFile *mf) {
    if (mf == NULL) return;
    if (!flush_try(mf, CLOSE_ATTEMPTS))
        fprintf(stderr, "entrank: warning: %s stayed held open by another process for %d s; "
                        "%zu metric rows were not written\n", mf->path, CLOSE_ATTEMPTS * RETRY_MS / 1000,
                metrics_queued_rows(mf));
    free_file(mf);
}

// ----------------------------------------------------------------------------
// Rewinding a resumed run's file

typedef struct {
    hsize_t keep;
    const char *group;
} ShrinkCtx;

static herr_t shrink_cb(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    const ShrinkCtx *c = data;
    if (info->type != H5L_TYPE_HARD) return 0;
    // A subgroup (/eval/hellaswag: scores of checkpoints, which a resume writes again bitwise) is
    // not a series of this group's rows: left as it is, without HDF5's error stack for the failed open.
    ErrorPrinting quiet = errors_quiet();
    hid_t dset = H5Dopen2(group, name, H5P_DEFAULT);
    errors_restore(quiet);
    if (dset < 0) return 0;
    hid_t space = hidCheck(H5Dget_space(dset));
    hsize_t dims[H5S_MAX_RANK], maxdims[H5S_MAX_RANK];
    int rank = H5Sget_simple_extent_ndims(space);
    hdf5Check(rank);
    hdf5Check(H5Sget_simple_extent_dims(space, dims, maxdims));
    hdf5Check(H5Sclose(space));
    // Fixed-size datasets are axis values (dimension scales), not rows.
    if (rank > 0 && maxdims[0] == H5S_UNLIMITED && dims[0] > c->keep) {
        dims[0] = c->keep;
        hdf5Check(H5Dset_extent(dset, dims));
    }
    hdf5Check(H5Dclose(dset));
    return 0;
}

int metrics_rewind(const char *path, const char *group, double first_dropped_step, Error *err) {
    bool locked;
    char msg[512];
    hid_t file = open_for_write(path, CLOSE_ATTEMPTS, &locked, msg, sizeof msg);
    if (file < 0) return error_set(err, "cannot reopen metrics file %s: %s", path, msg);
    char step_name[256];
    snprintf(step_name, sizeof step_name, "%s/step", group);
    ErrorPrinting quiet = errors_quiet();
    htri_t has_group = H5Lexists(file, group, H5P_DEFAULT);
    htri_t has_steps = has_group > 0 ? H5Lexists(file, step_name, H5P_DEFAULT) : 0;
    errors_restore(quiet);
    if (has_steps > 0) {
        hid_t dset = hidCheck(H5Dopen2(file, step_name, H5P_DEFAULT));
        hid_t space = hidCheck(H5Dget_space(dset));
        hsize_t n;
        hdf5Check(H5Sget_simple_extent_dims(space, &n, NULL));
        double *steps = xmalloc((n ? n : 1) * sizeof(double));
        if (n) hdf5Check(H5Dread(dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, steps));
        hdf5Check(H5Sclose(space));
        hdf5Check(H5Dclose(dset));
        // Rows are in step order: keep those before the first dropped step.
        hsize_t keep = 0;
        while (keep < n && steps[keep] < first_dropped_step) keep++;
        free(steps);
        ShrinkCtx c = {keep, group};
        hid_t g = hidCheck(H5Gopen2(file, group, H5P_DEFAULT));
        hdf5Check(H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, shrink_cb, &c));
        hdf5Check(H5Gclose(g));
    }
    close_file(file, path);
    return 0;
}

typedef struct {
    char names[64][256];
    int n;
} GroupList;

static herr_t group_cb(hid_t loc, const char *name, const H5L_info_t *info, void *data) {
    (void)loc;
    GroupList *g = data;
    if (info->type == H5L_TYPE_HARD && g->n < 64) snprintf(g->names[g->n++], sizeof g->names[0], "/%s", name);
    return 0;
}

int metrics_rewind_all(const char *path, double first_dropped_step, Error *err) {
    bool locked;
    char msg[512];
    hid_t file = open_for_write(path, CLOSE_ATTEMPTS, &locked, msg, sizeof msg);
    if (file < 0) return error_set(err, "cannot reopen metrics file %s: %s", path, msg);
    GroupList *groups = xcalloc(1, sizeof *groups);   // the root's links; metrics_rewind skips those without a step
    hdf5Check(H5Literate(file, H5_INDEX_NAME, H5_ITER_INC, NULL, group_cb, groups));
    close_file(file, path);
    int rc = 0;
    for (int i = 0; i < groups->n && rc == 0; i++) rc = metrics_rewind(path, groups->names[i], first_dropped_step, err);
    free(groups);
    return rc;
}
