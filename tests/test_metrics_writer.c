// test_metrics_writer.c: metrics.h5 writer (src/metrics.c), checked by reading the file back with
// the HDF5 C API. With ENTRANK_METRICS_OUT set, only test_sample_file runs and leaves its file at
// that path for tests/test_metrics_h5py.py.
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <hdf5.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fixtures.h"
#include "metrics.h"

// ----------------------------------------------------------------------------
// Fixture: a fresh directory per test

typedef struct {
    char dir[SCRATCH_DIR_LEN];
    char path[128];  // dir/m.h5
} Tmp;

static int setup_tmp(void **state) {
    if (scratch_setup(state, Tmp, "/tmp/entrank-metrics-XXXXXX") != 0) return -1;
    Tmp *t = *state;
    scratch_path(t->dir, "m.h5", t->path, sizeof t->path);
    return 0;
}

static const MetricsRunInfo RUN_INFO = {
    .config_text = "model: { n_layer = 2; n_head = 3; };\ntrain: { steps = 5; };\n",
    .revision = "abc1234",
    .dp = 2,
    .pp = 1,
    .device = "cpu",
};

static MetricsFile *create_or_fail(const char *path) {
    Error err = {{0}};
    MetricsFile *mf = metrics_create(path, &RUN_INFO, &err);
    if (mf == NULL) fail_msg("metrics_create: %s", err.msg);
    return mf;
}

static MetricsFile *reopen_or_fail(const char *path) {
    Error err = {{0}};
    MetricsFile *mf = metrics_open_append(path, &err);
    if (mf == NULL) fail_msg("metrics_open_append: %s", err.msg);
    return mf;
}

// ----------------------------------------------------------------------------
// Readers (HDF5 C API)

static void assert_no_open_hdf5_objects(void) {
    assert_int_equal(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0);
}

typedef struct {
    int rank;
    hsize_t dims[H5S_MAX_RANK], maxdims[H5S_MAX_RANK], chunk[H5S_MAX_RANK];
    bool float64;
    double *data;  // prod(dims) values, caller frees
} Read;

static Read read_dataset(const char *path, const char *name) {
    Read r = {0};
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    hid_t dset = H5Dopen2(file, name, H5P_DEFAULT);
    assert_true(dset >= 0);
    hid_t space = H5Dget_space(dset);
    r.rank = H5Sget_simple_extent_ndims(space);
    assert_true(r.rank >= 1);
    assert_true(H5Sget_simple_extent_dims(space, r.dims, r.maxdims) >= 0);
    hid_t type = H5Dget_type(dset);
    r.float64 = H5Tget_class(type) == H5T_FLOAT && H5Tget_size(type) == 8;
    hid_t dcpl = H5Dget_create_plist(dset);
    assert_int_equal(H5Pget_layout(dcpl), H5D_CHUNKED);
    assert_int_equal(H5Pget_chunk(dcpl, r.rank, r.chunk), r.rank);
    hsize_t n = 1;
    for (int k = 0; k < r.rank; k++) n *= r.dims[k];
    r.data = xmalloc((size_t)n * sizeof(double));
    if (n > 0) assert_true(H5Dread(dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, r.data) >= 0);
    H5Pclose(dcpl);
    H5Tclose(type);
    H5Sclose(space);
    H5Dclose(dset);
    assert_true(H5Fclose(file) >= 0);
    return r;
}

static hsize_t dataset_length(const char *path, const char *name) {
    Read r = read_dataset(path, name);
    free(r.data);
    return r.dims[0];
}

// A string attribute of object `obj` ("/" for the root), as a malloc'd copy.
static char *read_str_attr(const char *path, const char *obj, const char *attr_name) {
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    hid_t attr = H5Aopen_by_name(file, obj, attr_name, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0) fail_msg("attribute %s of %s missing", attr_name, obj);
    hid_t type = H5Aget_type(attr);
    assert_int_equal(H5Tget_class(type), H5T_STRING);
    assert_true(H5Tis_variable_str(type) > 0);
    char *value = NULL;
    assert_true(H5Aread(attr, type, &value) >= 0);
    char *copy = xstrdup(value);
    H5free_memory(value);
    H5Tclose(type);
    H5Aclose(attr);
    assert_true(H5Fclose(file) >= 0);
    return copy;
}

static void assert_str_attr(const char *path, const char *obj, const char *attr_name, const char *want) {
    char *got = read_str_attr(path, obj, attr_name);
    assert_string_equal(got, want);
    free(got);
}

// An int attribute with exactly n values (n = 1 also for scalars); returns them in out.
static void read_int_attr(const char *path, const char *obj, const char *attr_name, int *out, hssize_t n) {
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    hid_t attr = H5Aopen_by_name(file, obj, attr_name, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0) fail_msg("attribute %s of %s missing", attr_name, obj);
    hid_t type = H5Aget_type(attr);
    assert_int_equal(H5Tget_class(type), H5T_INTEGER);
    hid_t space = H5Aget_space(attr);
    assert_int_equal(H5Sget_simple_extent_npoints(space), n);
    assert_true(H5Aread(attr, H5T_NATIVE_INT, out) >= 0);
    H5Sclose(space);
    H5Tclose(type);
    H5Aclose(attr);
    assert_true(H5Fclose(file) >= 0);
}

static bool attr_exists(const char *path, const char *obj, const char *attr_name) {
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    htri_t e = H5Aexists_by_name(file, obj, attr_name, H5P_DEFAULT);
    assert_true(e >= 0);
    assert_true(H5Fclose(file) >= 0);
    return e > 0;
}

// Runs fn(arg) in a child process (for calls that are meant to exit), with its stderr in
// `stderr_path`; returns the exit status, or -1 if it did not exit normally.
static int run_in_child(void (*fn)(void *), void *arg, const char *stderr_path) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(stderr_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 2);
        fn(arg);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *buf = xcalloc(1, 8192);
    size_t n = fread(buf, 1, 8191, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

// ----------------------------------------------------------------------------
// Tests

static void test_scalars_over_flushes(void **state) {
    Tmp *t = *state;
    MetricsFile *mf = create_or_fail(t->path);
    metrics_declare(mf, "/steps/loss", 0, NULL, "training loss", "nats");
    metrics_declare(mf, "/steps/step", 0, NULL, "optimizer step", "steps");
    int i = 0;
    const int batches[3] = {10, 5, 7};
    for (int b = 0; b < 3; b++) {
        for (int j = 0; j < batches[b]; j++, i++) {
            double loss = 5.0 - 0.01 * i, step = i + 1;
            metrics_append(mf, "/steps/loss", &loss);
            metrics_append(mf, "/steps/step", &step);
        }
        assert_int_equal(metrics_queued_rows(mf), 2 * batches[b]);
        metrics_flush(mf);
        assert_int_equal(metrics_queued_rows(mf), 0);
        assert_int_equal(dataset_length(t->path, "/steps/loss"), i);
    }
    metrics_close(mf);

    Read r = read_dataset(t->path, "/steps/loss");
    assert_int_equal(r.rank, 1);
    assert_int_equal(r.dims[0], 22);
    assert_true(r.float64);
    for (int k = 0; k < 22; k++) assert_true(r.data[k] == 5.0 - 0.01 * k);
    free(r.data);
    r = read_dataset(t->path, "/steps/step");
    for (int k = 0; k < 22; k++) assert_true(r.data[k] == k + 1);
    free(r.data);
}

static void test_2d_rows_exact(void **state) {
    Tmp *t = *state;
    MetricsFile *mf = create_or_fail(t->path);
    const size_t dims[2] = {3, 4};
    metrics_declare(mf, "/trace/grid", 2, dims, "a 3x4 grid per step", "1");
    double row[12];
    for (int i = 0; i < 5; i++) {
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 4; b++) row[a * 4 + b] = 100.0 * i + 10.0 * a + b + 0.5;
        metrics_append(mf, "/trace/grid", row);
        if (i == 1) metrics_flush(mf);  // rows split over two flushes
    }
    metrics_close(mf);

    Read r = read_dataset(t->path, "/trace/grid");
    assert_int_equal(r.rank, 3);
    assert_int_equal(r.dims[0], 5);
    assert_int_equal(r.dims[1], 3);
    assert_int_equal(r.dims[2], 4);
    assert_true(r.maxdims[0] == H5S_UNLIMITED);
    assert_int_equal(r.maxdims[1], 3);
    assert_int_equal(r.maxdims[2], 4);
    assert_int_equal(r.chunk[0], 64 * 1024 / (12 * 8));
    assert_int_equal(r.chunk[1], 3);
    assert_int_equal(r.chunk[2], 4);
    assert_true(r.float64);
    for (int i = 0; i < 5; i++)
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 4; b++) assert_true(r.data[(i * 3 + a) * 4 + b] == 100.0 * i + 10.0 * a + b + 0.5);
    free(r.data);
}

static void test_dataset_attributes(void **state) {
    Tmp *t = *state;
    MetricsFile *mf = create_or_fail(t->path);
    const size_t lh[2] = {4, 3};
    metrics_declare(mf, "/trace/attn_entropy", 2, lh, "mean attention row entropy per layer and head", "nats");
    metrics_declare(mf, "/steps/lr", 0, NULL, "learning rate", "1");
    const int layers[4] = {0, 1, 2, 3};
    metrics_set_axis(mf, "/trace/attn_entropy", 1, "layer", layers, 4);
    metrics_set_axis(mf, "/trace/attn_entropy", 2, "head", NULL, 0);  // named, no values
    double row[12] = {0};
    metrics_append(mf, "/trace/attn_entropy", row);
    metrics_close(mf);

    assert_str_attr(t->path, "/trace/attn_entropy", "description", "mean attention row entropy per layer and head");
    assert_str_attr(t->path, "/trace/attn_entropy", "units", "nats");
    assert_str_attr(t->path, "/trace/attn_entropy", "axes", "step,layer,head");
    int got[4] = {-1, -1, -1, -1};
    read_int_attr(t->path, "/trace/attn_entropy", "axis1_layer", got, 4);
    for (int l = 0; l < 4; l++) assert_int_equal(got[l], l);
    assert_false(attr_exists(t->path, "/trace/attn_entropy", "axis2_head"));
    assert_str_attr(t->path, "/steps/lr", "description", "learning rate");
    assert_str_attr(t->path, "/steps/lr", "units", "1");
    assert_false(attr_exists(t->path, "/steps/lr", "axes"));
    // Declared with no rows: the dataset still exists, empty, after close.
    assert_int_equal(dataset_length(t->path, "/steps/lr"), 0);
}

static void test_root_attributes(void **state) {
    Tmp *t = *state;
    MetricsFile *mf = create_or_fail(t->path);
    metrics_close(mf);
    assert_str_attr(t->path, "/", "config", RUN_INFO.config_text);
    assert_str_attr(t->path, "/", "revision", "abc1234");
    assert_str_attr(t->path, "/", "device", "cpu");
    int v = -1;
    read_int_attr(t->path, "/", "dp", &v, 1);
    assert_int_equal(v, 2);
    read_int_attr(t->path, "/", "pp", &v, 1);
    assert_int_equal(v, 1);
    char *created = read_str_attr(t->path, "/", "created");
    // ISO 8601 UTC, e.g. 2025-01-31T12:34:56Z
    assert_int_equal(strlen(created), 20);
    assert_true(created[4] == '-' && created[7] == '-' && created[10] == 'T' && created[13] == ':' &&
                created[16] == ':' && created[19] == 'Z');
    assert_true(strncmp(created, "20", 2) == 0);
    free(created);
    assert_str_attr(t->path, "/", "config_json", "{\"model\": {\"n_layer\": 2, \"n_head\": 3}, \"train\": {\"steps\": 5}}");
}

// A resumed run describes itself: config, config_json, revision, device, dp, pp are its own, while
// `created` and the rows stay.
static void test_set_run_info_on_resume(void **state) {
    Tmp *t = *state;
    MetricsFile *mf = create_or_fail(t->path);
    metrics_declare(mf, "/steps/step", 0, NULL, "step", "step");
    metrics_append(mf, "/steps/step", &(double){0});
    metrics_close(mf);
    char *created = read_str_attr(t->path, "/", "created");
    MetricsRunInfo info = {.config_text = "train = { steps = 9; };\n", .revision = "def5678", .dp = 1, .pp = 4, .device = "cuda"};
    Error err = {{0}};
    assert_int_equal(metrics_set_run_info(t->path, &info, &err), 0);
    assert_str_attr(t->path, "/", "config", info.config_text);
    assert_str_attr(t->path, "/", "config_json", "{\"train\": {\"steps\": 9}}");
    assert_str_attr(t->path, "/", "revision", "def5678");
    assert_str_attr(t->path, "/", "device", "cuda");
    assert_str_attr(t->path, "/", "created", created);
    int v = -1;
    read_int_attr(t->path, "/", "pp", &v, 1);
    assert_int_equal(v, 4);
    Read r = read_dataset(t->path, "/steps/step");
    assert_int_equal(r.dims[0], 1);
    free(r.data);
    free(created);
}

// The resolved config as JSON: every libconfig value kind, floats in their shortest exact form and
// still floats, strings escaped, lists of lists (data.blend) as arrays.
static void test_config_json(void **state) {
    Tmp *t = *state;
    MetricsRunInfo info = RUN_INFO;
    info.config_text = "train = { lr = 0.003; tokens = 0.0; big = 100000000000L; on = true; };\n"
                       "data = { train = \"a \\\"b\\\"\\\\c\"; blend = ( (1.0, \"x\", \"llmc\") ); logic = { depth = [1, 2]; }; };\n";
    Error err = {{0}};
    MetricsFile *mf = metrics_create(t->path, &info, &err);
    if (mf == NULL) fail_msg("metrics_create: %s", err.msg);
    metrics_close(mf);
    assert_str_attr(t->path, "/", "config_json",
                    "{\"train\": {\"lr\": 0.003, \"tokens\": 0.0, \"big\": 100000000000, \"on\": true}, "
                    "\"data\": {\"train\": \"a \\\"b\\\"\\\\c\", \"blend\": [[1.0, \"x\", \"llmc\"]], \"logic\": {\"depth\": [1, 2]}}}");
    // Text libconfig rejects is an error of metrics_create, not a file without the attribute.
    info.config_text = "model = { n_layer = ; };";
    assert_null(metrics_create(t->path, &info, &err));
    assert_non_null(strstr(err.msg, "does not parse"));
}

static void test_reopen_append_continues(void **state) {
    Tmp *t = *state;
    const size_t d3[1] = {3};
    MetricsFile *mf = create_or_fail(t->path);
    metrics_declare(mf, "/steps/loss", 0, NULL, "loss", "nats");
    metrics_declare(mf, "/sga/alpha", 1, d3, "alpha per layer", "1");
    for (int i = 0; i < 4; i++) {
        double v = i, row[3] = {i, i + 0.25, i + 0.5};
        metrics_append(mf, "/steps/loss", &v);
        metrics_append(mf, "/sga/alpha", row);
    }
    metrics_close(mf);

    mf = reopen_or_fail(t->path);
    metrics_declare(mf, "/steps/loss", 0, NULL, "loss (resumed)", "nats");
    metrics_declare(mf, "/sga/alpha", 1, d3, "alpha per layer", "1");
    metrics_declare(mf, "/eval/val_loss", 0, NULL, "validation loss", "nats");  // new in the resumed run
    for (int i = 4; i < 7; i++) {
        double v = i, row[3] = {i, i + 0.25, i + 0.5};
        metrics_append(mf, "/steps/loss", &v);
        metrics_append(mf, "/sga/alpha", row);
    }
    double vl = 3.5;
    metrics_append(mf, "/eval/val_loss", &vl);
    metrics_close(mf);

    Read r = read_dataset(t->path, "/steps/loss");
    assert_int_equal(r.dims[0], 7);
    for (int i = 0; i < 7; i++) assert_true(r.data[i] == i);
    free(r.data);
    r = read_dataset(t->path, "/sga/alpha");
    assert_int_equal(r.dims[0], 7);
    assert_int_equal(r.dims[1], 3);
    for (int i = 0; i < 7; i++)
        for (int k = 0; k < 3; k++) assert_true(r.data[i * 3 + k] == i + 0.25 * k);
    free(r.data);
    r = read_dataset(t->path, "/eval/val_loss");
    assert_int_equal(r.dims[0], 1);
    assert_true(r.data[0] == 3.5);
    free(r.data);
    assert_str_attr(t->path, "/steps/loss", "description", "loss (resumed)");
    assert_str_attr(t->path, "/", "revision", "abc1234");  // root attributes survive the reopen
}

typedef struct {
    const char *path;
} ChildArg;

static void declare_mismatch_child(void *arg) {
    MetricsFile *mf = metrics_open_append(((ChildArg *)arg)->path, NULL);
    if (mf == NULL) _exit(99);
    const size_t d4[1] = {4};
    metrics_declare(mf, "/sga/alpha", 1, d4, "alpha", "1");  // must exit with EXIT_BAD_INPUT
}

static void test_reopen_shape_mismatch(void **state) {
    Tmp *t = *state;
    const size_t d3[1] = {3}, d4[1] = {4}, d3x1[2] = {3, 1};
    MetricsFile *mf = create_or_fail(t->path);
    metrics_declare(mf, "/sga/alpha", 1, d3, "alpha", "1");
    metrics_declare(mf, "/steps/loss", 0, NULL, "loss", "nats");
    metrics_close(mf);

    mf = reopen_or_fail(t->path);
    Error err = {{0}};
    assert_int_equal(metrics_try_declare(mf, "/sga/alpha", 1, d4, "alpha", "1", &err), -1);
    assert_non_null(strstr(err.msg, "/sga/alpha"));
    assert_non_null(strstr(err.msg, "[3]"));
    assert_non_null(strstr(err.msg, "[4]"));
    assert_int_equal(metrics_try_declare(mf, "/sga/alpha", 2, d3x1, "alpha", "1", &err), -1);
    assert_int_equal(metrics_try_declare(mf, "/steps/loss", 1, d3, "loss", "nats", &err), -1);
    assert_int_equal(metrics_try_declare(mf, "/sga/alpha", 1, d3, "alpha", "1", &err), 0);
    metrics_close(mf);

    char log[160];
    scratch_path(t->dir, "stderr.txt", log, sizeof log);
    ChildArg arg = {t->path};
    assert_int_equal(run_in_child(declare_mismatch_child, &arg, log), EXIT_BAD_INPUT);
    char *text = slurp(log);
    assert_non_null(strstr(text, "/sga/alpha"));
    free(text);
}

static void flush_child(void *arg) {
    metrics_flush(arg);
    _exit(0);
}

static void test_empty_flush_is_noop(void **state) {
    Tmp *t = *state;
    MetricsFile *mf = create_or_fail(t->path);
    metrics_declare(mf, "/steps/loss", 0, NULL, "loss", "nats");
    double v = 1.0;
    metrics_append(mf, "/steps/loss", &v);
    metrics_flush(mf);
    assert_int_equal(dataset_length(t->path, "/steps/loss"), 1);

    // With the file gone, a flush that opened it would die: exit 0 and no new file show that
    // a flush with nothing queued does not touch the disk.
    char moved[160], log[160];
    scratch_path(t->dir, "moved.h5", moved, sizeof moved);
    scratch_path(t->dir, "stderr.txt", log, sizeof log);
    assert_int_equal(rename(t->path, moved), 0);
    assert_int_equal(run_in_child(flush_child, mf, log), 0);
    assert_int_equal(access(t->path, F_OK), -1);
    // And the check is able to fail: with a row queued, the same flush does die.
    metrics_append(mf, "/steps/loss", &v);
    assert_int_equal(run_in_child(flush_child, mf, log), EXIT_FAILURE_OTHER);
    char *text = slurp(log);
    assert_non_null(strstr(text, t->path));
    free(text);

    assert_int_equal(rename(moved, t->path), 0);
    metrics_close(mf);
    assert_int_equal(dataset_length(t->path, "/steps/loss"), 2);
}

static void test_file_closed_between_flushes(void **state) {
    Tmp *t = *state;
    MetricsFile *mf = create_or_fail(t->path);
    assert_no_open_hdf5_objects();
    const size_t d2[1] = {2};
    metrics_declare(mf, "/steps/loss", 0, NULL, "loss", "nats");
    metrics_declare(mf, "/trace/resid_rank", 1, d2, "participation ratio", "1");
    metrics_set_axis(mf, "/trace/resid_rank", 1, "layer", (const int[]){0, 1}, 2);
    assert_no_open_hdf5_objects();
    for (int s = 0; s < 3; s++) {
        double v = s, row[2] = {s, -s};
        metrics_append(mf, "/steps/loss", &v);
        metrics_append(mf, "/trace/resid_rank", row);
        assert_no_open_hdf5_objects();
        metrics_flush(mf);
        assert_no_open_hdf5_objects();
        // A reader in the middle of the run: opening read-only works and sees every flushed row.
        hid_t file = H5Fopen(t->path, H5F_ACC_RDONLY, H5P_DEFAULT);
        assert_true(file >= 0);
        hid_t dset = H5Dopen2(file, "/trace/resid_rank", H5P_DEFAULT);
        assert_true(dset >= 0);
        hid_t space = H5Dget_space(dset);
        hsize_t dims[2];
        assert_int_equal(H5Sget_simple_extent_dims(space, dims, NULL), 2);
        assert_int_equal(dims[0], s + 1);
        H5Sclose(space);
        H5Dclose(dset);
        assert_true(H5Fclose(file) >= 0);
        assert_no_open_hdf5_objects();
    }
    metrics_close(mf);
    assert_no_open_hdf5_objects();
}

// A reader in another process holds the file open (and its shared lock) until told to let go.
static void test_reader_lock_defers_rows(void **state) {
    Tmp *t = *state;
    const char *locking = getenv("HDF5_USE_FILE_LOCKING");
    if (locking != NULL && (strcmp(locking, "FALSE") == 0 || strcmp(locking, "0") == 0)) {
        print_message("HDF5_USE_FILE_LOCKING disables locks: nothing to test\n");
        skip();
    }
    MetricsFile *mf = create_or_fail(t->path);
    metrics_declare(mf, "/steps/loss", 0, NULL, "loss", "nats");
    double v = 1.0;
    metrics_append(mf, "/steps/loss", &v);
    metrics_flush(mf);

    int ready[2], release[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(release), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        // Only the parent keeps the write end of `release`: if the parent dies, read sees EOF.
        close(ready[0]);
        close(release[1]);
        hid_t file = H5Fopen(t->path, H5F_ACC_RDONLY, H5P_DEFAULT);
        char c = file >= 0 ? 'y' : 'n';
        if (write(ready[1], &c, 1) != 1) _exit(2);
        if (read(release[0], &c, 1) < 0) _exit(2);
        _exit(file >= 0 && H5Fclose(file) >= 0 ? 0 : 1);
    }
    close(ready[1]);
    close(release[0]);
    char c = 0;
    assert_int_equal(read(ready[0], &c, 1), 1);
    assert_int_equal(c, 'y');

    for (int i = 0; i < 3; i++) {
        v = 2.0 + i;
        metrics_append(mf, "/steps/loss", &v);
    }
    metrics_flush(mf);  // cannot get the lock: keeps the rows, does not die
    assert_int_equal(metrics_queued_rows(mf), 3);
    assert_no_open_hdf5_objects();

    assert_int_equal(write(release[1], "x", 1), 1);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(ready[0]);
    close(release[1]);

    metrics_flush(mf);
    assert_int_equal(metrics_queued_rows(mf), 0);
    metrics_close(mf);
    Read r = read_dataset(t->path, "/steps/loss");
    assert_int_equal(r.dims[0], 4);
    for (int i = 0; i < 4; i++) assert_true(r.data[i] == 1.0 + i);
    free(r.data);
}

static void test_100k_rows(void **state) {
    Tmp *t = *state;
    enum { N = 100000 };
    const size_t d5[1] = {5};
    MetricsFile *mf = create_or_fail(t->path);
    metrics_declare(mf, "/steps/tokens", 0, NULL, "tokens seen", "tokens");
    metrics_declare(mf, "/trace/wide", 1, d5, "five per step", "1");
    for (int i = 0; i < N; i++) {
        double v = (double)i * 4096.0, row[5];
        for (int k = 0; k < 5; k++) row[k] = i + 0.125 * k;
        metrics_append(mf, "/steps/tokens", &v);
        metrics_append(mf, "/trace/wide", row);
        if (i == N / 3) metrics_flush(mf);  // the series crosses chunk boundaries mid-write
    }
    metrics_close(mf);

    Read r = read_dataset(t->path, "/steps/tokens");
    assert_int_equal(r.dims[0], N);
    assert_int_equal(r.chunk[0], 64 * 1024 / 8);
    for (int i = 0; i < N; i++)
        if (r.data[i] != (double)i * 4096.0) fail_msg("tokens[%d] = %g", i, r.data[i]);
    free(r.data);
    r = read_dataset(t->path, "/trace/wide");
    assert_int_equal(r.dims[0], N);
    assert_int_equal(r.dims[1], 5);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < 5; k++)
            if (r.data[i * 5 + k] != i + 0.125 * k) fail_msg("wide[%d][%d] = %g", i, k, r.data[i * 5 + k]);
    free(r.data);
}

// Misuse that is a programming error exits 1 with a message naming the dataset.
typedef struct {
    const char *path;
    int which;
} MisuseArg;

static void misuse_child(void *arg) {
    MisuseArg *a = arg;
    MetricsFile *mf = metrics_create(a->path, &RUN_INFO, NULL);
    if (mf == NULL) _exit(99);
    double v = 0;
    const size_t d2[1] = {2};
    switch (a->which) {
    case 0:
        metrics_declare(mf, "/steps/loss", 0, NULL, "loss", "nats");
        metrics_declare(mf, "/steps/loss", 0, NULL, "loss", "nats");
        break;
    case 1: metrics_append(mf, "/steps/loss", &v); break;
    case 2: metrics_declare(mf, "steps/loss", 0, NULL, "loss", "nats"); break;
    case 3:
        metrics_declare(mf, "/trace/x", 1, d2, "x", "1");
        metrics_set_axis(mf, "/trace/x", 1, "layer", (const int[]){0, 1, 2}, 3);
        break;
    }
    _exit(0);
}

static void test_programming_errors_die(void **state) {
    Tmp *t = *state;
    char log[160];
    scratch_path(t->dir, "stderr.txt", log, sizeof log);
    const char *want[4] = {"declared twice", "not declared", "bad metrics dataset name", "values for a dim"};
    for (int which = 0; which < 4; which++) {
        MisuseArg arg = {t->path, which};
        assert_int_equal(run_in_child(misuse_child, &arg, log), EXIT_FAILURE_OTHER);
        char *text = slurp(log);
        if (strstr(text, want[which]) == NULL) fail_msg("case %d: stderr was: %s", which, text);
        free(text);
    }
}

static void test_open_errors(void **state) {
    Tmp *t = *state;
    Error err = {{0}};
    char bad[160];
    scratch_path(t->dir, "no/such/dir/m.h5", bad, sizeof bad);
    assert_null(metrics_create(bad, &RUN_INFO, &err));
    assert_non_null(strstr(err.msg, bad));
    assert_null(metrics_open_append(t->path, &err));  // does not exist yet
    assert_non_null(strstr(err.msg, t->path));

    // An HDF5 file that is not a metrics file (no root 'created'): refused, not appended to.
    hid_t file = H5Fcreate(t->path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(file >= 0);
    assert_true(H5Fclose(file) >= 0);
    assert_null(metrics_open_append(t->path, &err));
    assert_non_null(strstr(err.msg, "not a metrics file"));
    assert_no_open_hdf5_objects();
}

// A resumed run's rewind drops the rows of every group from the checkpoint's step on, not axis
// values: the dimension scales (fixed size) stay whole.
static void test_rewind_keeps_axis_scales(void **state) {
    Tmp *t = *state;
    enum { L = 3 };
    const size_t dims[1] = {L};
    const int layers[L] = {4, 7, 9};
    MetricsFile *mf = create_or_fail(t->path);
    metrics_declare(mf, "/trace/step", 0, NULL, "trace step", "step");
    metrics_declare(mf, "/trace/x", 1, dims, "a per-layer value", "1");
    metrics_set_axis(mf, "/trace/x", 1, "layer", layers, L);
    for (int i = 0; i < 4; i++) {
        double step = 10 * i, row[L] = {i, i, i};
        metrics_append(mf, "/trace/step", &step);
        metrics_append(mf, "/trace/x", row);
    }
    metrics_close(mf);
    metrics_declare(mf = reopen_or_fail(t->path), "/eval/step", 0, NULL, "eval step", "step");
    for (int i = 0; i < 3; i++) metrics_append(mf, "/eval/step", &(double){15 * i});   // 0, 15, 30
    metrics_close(mf);
    Error err = {{0}};
    assert_int_equal(metrics_rewind_all(t->path, 20, &err), 0);   // every group: keeps steps below 20
    Read e = read_dataset(t->path, "/eval/step");
    assert_int_equal(e.dims[0], 2);
    free(e.data);
    Read r = read_dataset(t->path, "/trace/x");
    assert_int_equal(r.dims[0], 2);
    free(r.data);
    hid_t file = H5Fopen(t->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    hid_t scale = H5Dopen2(file, "/trace/layer", H5P_DEFAULT);
    assert_true(scale >= 0);
    int got[L + 1] = {0};
    hid_t space = H5Dget_space(scale);
    assert_int_equal(H5Sget_simple_extent_npoints(space), L);
    assert_true(H5Dread(scale, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, got) >= 0);
    for (int l = 0; l < L; l++) assert_int_equal(got[l], layers[l]);
    H5Sclose(space);
    H5Dclose(scale);
    assert_true(H5Fclose(file) >= 0);
}

// The file the h5py test reads: created, closed, reopened and appended to, as a resumed run does.
static void test_sample_file(void **state) {
    Tmp *t = *state;
    const char *out = getenv("ENTRANK_METRICS_OUT");
    const char *path = out != NULL && out[0] != '\0' ? out : t->path;
    enum { L = 2, H = 3 };
    const size_t lh[2] = {L, H};
    const int layers[L] = {0, 1}, heads[H] = {0, 1, 2};

    for (int run = 0; run < 2; run++) {
        MetricsFile *mf = run == 0 ? create_or_fail(path) : reopen_or_fail(path);
        metrics_declare(mf, "/steps/step", 0, NULL, "optimizer step after the update", "steps");
        metrics_declare(mf, "/steps/loss", 0, NULL, "training loss", "nats");
        metrics_declare(mf, "/trace/attn_entropy", 2, lh, "mean attention row entropy", "nats");
        metrics_set_axis(mf, "/trace/attn_entropy", 0, "step", NULL, 0);
        metrics_set_axis(mf, "/trace/attn_entropy", 1, "layer", layers, L);
        metrics_set_axis(mf, "/trace/attn_entropy", 2, "head", heads, H);
        metrics_declare(mf, "/trace/step", 0, NULL, "step of the trace", "step");
        metrics_declare(mf, "/trace/map", 1, (const size_t[]){H}, "a half-precision row per step", "1");
        metrics_set_storage(mf, "/trace/map", METRICS_F16);
        metrics_set_axis(mf, "/trace/map", 1, "head", heads, H);
        metrics_declare(mf, "/steps/pair", 1, (const size_t[]){2}, "a row whose axis is not named", "1");
        int first = run == 0 ? 0 : 3, last = run == 0 ? 3 : 5;
        for (int i = first; i < last; i++) {
            double step = i + 1, loss = 4.0 - 0.25 * i, row[L * H];
            for (int l = 0; l < L; l++)
                for (int h = 0; h < H; h++) row[l * H + h] = i + 0.125 * l + 0.0625 * h;
            metrics_append(mf, "/steps/step", &step);
            metrics_append(mf, "/steps/loss", &loss);
            metrics_append(mf, "/trace/attn_entropy", row);
            double map[H] = {i + 0.5, 1.0 / 3.0, 65504.0};   // half: exact, rounded, the largest finite
            metrics_append(mf, "/trace/step", &step);
            metrics_append(mf, "/trace/map", map);
            metrics_append(mf, "/steps/pair", (const double[]){i, -i});
            if (i == first) metrics_flush(mf);
        }
        metrics_close(mf);
    }

    Read r = read_dataset(path, "/trace/attn_entropy");
    assert_int_equal(r.dims[0], 5);
    for (int i = 0; i < 5; i++)
        for (int l = 0; l < L; l++)
            for (int h = 0; h < H; h++) assert_true(r.data[(i * L + l) * H + h] == i + 0.125 * l + 0.0625 * h);
    free(r.data);
    assert_str_attr(path, "/trace/attn_entropy", "axes", "step,layer,head");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scalars_over_flushes, setup_tmp, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_2d_rows_exact, setup_tmp, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_attributes, setup_tmp, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_root_attributes, setup_tmp, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_config_json, setup_tmp, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_set_run_info_on_resume, setup_tmp, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_reopen_append_continues, setup_tmp, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_reopen_shape_mismatch, setup_tmp, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_empty_flush_is_noop, setup_tmp, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_file_closed_between_flushes, setup_tmp, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_reader_lock_defers_rows, setup_tmp, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_100k_rows, setup_tmp, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_programming_errors_die, setup_tmp, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_open_errors, setup_tmp, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_rewind_keeps_axis_scales, setup_tmp, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_sample_file, setup_tmp, scratch_teardown),
    };
    // The h5py test wants only the sample file, left at the path it chose.
    if (getenv("ENTRANK_METRICS_OUT") != NULL) cmocka_set_test_filter("test_sample_file");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
