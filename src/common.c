#include "common.h"
#include <mpi.h>
#include <string.h>

int error_set(Error *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("entrank: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    // Under MPI a rank that stops alone must take the others with it, or they would wait forever.
    int initialized = 0, finalized = 0, world = 1;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized) {
        MPI_Comm_size(MPI_COMM_WORLD, &world);
        if (world > 1) MPI_Abort(MPI_COMM_WORLD, code);
        MPI_Finalize();
    }
    exit(code);
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    CHECK_ALLOC(p);
    return p;
}

void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    CHECK_ALLOC(p);
    return p;
}

char *xstrdup(const char *s) {
    char *p = strdup(s);
    CHECK_ALLOC(p);
    return p;
}
