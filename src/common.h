// common.h: exit codes, error reporting and the checking macros used everywhere.
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>

// Exit codes of the command-line contract (docs/faults.md).
enum {
    EXIT_DONE = 0,
    EXIT_FAILURE_OTHER = 1,
    EXIT_BAD_INPUT = 2,      // bad usage, config, data or checkpoint: message names file and key/offset
    EXIT_REQUEUE = 3,        // stopped by a signal after a clean checkpoint
};

// A fixed-size error message buffer passed down by loaders, so that the caller decides
// how to report (print and exit 2 in the CLI, assert on the text in tests).
#define ERR_LEN 1024
typedef struct {
    char msg[ERR_LEN];
} Error;

// Formats into err (if not NULL) and returns -1, so loaders can write `return error_set(err, ...)`.
int error_set(Error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Prints "entrank: <msg>" on stderr and exits with `code`.
void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

// Allocation that never returns NULL: out-of-memory is an "other failure" (exit 1).
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
char *xstrdup(const char *s);

#define CHECK_ALLOC(p) do { if ((p) == NULL) die(EXIT_FAILURE_OTHER, "out of memory at %s:%d", __FILE__, __LINE__); } while (0)

// Library-call checks: a failing HDF5 / MPI call is a bug or an I/O failure, not bad input.
#define hdf5Check(call) do { if ((call) < 0) die(EXIT_FAILURE_OTHER, "HDF5 call failed at %s:%d: %s", __FILE__, __LINE__, #call); } while (0)
#define mpiCheck(call) do { int mpi_rc_ = (call); if (mpi_rc_ != 0) die(EXIT_FAILURE_OTHER, "MPI call failed (%d) at %s:%d: %s", mpi_rc_, __FILE__, __LINE__, #call); } while (0)
