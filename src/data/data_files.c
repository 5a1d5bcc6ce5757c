// data_files.c: opening, reading and globbing token files; shared by the llmc, megatron and text kinds.
#define _FILE_OFFSET_BITS 64   // off_t is 64-bit: shards larger than 2 GiB are normal
#include "data_files.h"
#include "../regular_file.h"
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <glob.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void token_files_add(TokenFiles *f, const char *path, int64_t data_offset, int64_t n_tokens) {
    TokenShard *s = realloc(f->shards, (size_t)(f->n_shards + 1) * sizeof *s);
    CHECK_ALLOC(s);
    f->shards = s;
    s[f->n_shards].path = xstrdup(path);
    s[f->n_shards].data_offset = data_offset;
    s[f->n_shards].n_tokens = n_tokens;
    s[f->n_shards].map = NULL;
    s[f->n_shards].map_bytes = 0;
    f->n_shards++;
}

void token_files_free(TokenFiles *f) {
    for (int i = 0; i < f->n_shards; i++) {
        if (f->shards[i].map) munmap((void *)f->shards[i].map, (size_t)f->shards[i].map_bytes);
        free(f->shards[i].path);
    }
    free(f->shards);
    memset(f, 0, sizeof *f);
}

int data_file_open(const char *path, const char *key, int *fd, int64_t *size, Error *err) {
    const char *why;
    *fd = regular_file_open(path, size, &why);   // a FIFO would block a plain open() for ever
    if (*fd < 0) return error_set(err, "%s: cannot open (%s): %s", path, key, why);
    return 0;
}

int64_t data_pread_full(int fd, void *buf, int64_t n, int64_t offset) {
    int64_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (char *)buf + done, (size_t)(n - done), (off_t)(offset + done));
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) break;   // end of file
        done += r;
    }
    return done;
}

int data_expand_pattern(const char *pattern, const char *key, char ***paths, int *n, Error *err) {
    *paths = NULL;
    *n = 0;
    if (pattern[0] == '\0') return error_set(err, "%s: is empty (a file or glob pattern is required)", key);
    if (strpbrk(pattern, "*?[") == NULL) {
        // A plain path: keep it, so that a missing file is reported by open() with its own name.
        *paths = xmalloc(sizeof **paths);
        (*paths)[0] = xstrdup(pattern);
        *n = 1;
        return 0;
    }
    glob_t g;
    int rc = glob(pattern, GLOB_ERR, NULL, &g);   // results come sorted (no GLOB_NOSORT)
    if (rc == GLOB_NOMATCH) return error_set(err, "%s: no file matches \"%s\"", key, pattern);
    if (rc != 0) return error_set(err, "%s: cannot expand \"%s\": %s", key, pattern, rc == GLOB_NOSPACE ? "out of memory" : "read error");
    *paths = xmalloc(g.gl_pathc * sizeof **paths);
    for (size_t i = 0; i < g.gl_pathc; i++) (*paths)[i] = xstrdup(g.gl_pathv[i]);
    *n = (int)g.gl_pathc;
    globfree(&g);
    return 0;
}

void data_free_paths(char **paths, int n) {
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
}

// ---- Reading through a mapping of a file that may shrink -------------------------------------
//
// A file truncated while mapped faults with SIGBUS on the first access to a page past its new end
// (a corpus rewritten in place by a preparation job, a quota-killed copy). A check of the size
// before each read (fstat) would cost a system call per window, need a descriptor per shard, and
// still lose the race against a truncation between the check and the copy. Instead the reads run
// under a SIGBUS handler that jumps back to the read, which then fails with a one-line error. The
// fault is synchronous (raised by the faulting thread on its own access), so the jump lands in the
// frame that armed it; a SIGBUS outside a guarded read keeps its default action (a crash, with core).

static _Thread_local sigjmp_buf *guard_jump;   // armed by data_map_guarded on this thread, else NULL
static atomic_int guard_installed;

static void on_sigbus(int sig, siginfo_t *info, void *ctx) {
    (void)info; (void)ctx;
    if (guard_jump) siglongjmp(*guard_jump, 1);
    signal(sig, SIG_DFL);   // not ours: the default action, at once
    raise(sig);
}

int data_map_guarded(int (*read)(void *arg, Error *err), void *arg, const char *path, Error *err) {
    if (!atomic_exchange(&guard_installed, 1)) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_sigbus;
        sa.sa_flags = SA_SIGINFO | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGBUS, &sa, NULL);
    }
    sigjmp_buf jump;
    sigjmp_buf *outer = guard_jump;
    // savemask 0: no system call per read. SA_NODEFER keeps SIGBUS unblocked inside the handler,
    // so after the jump the mask is what it was and the next SIGBUS is caught too.
    if (sigsetjmp(jump, 0)) {
        guard_jump = outer;
        struct stat st;
        if (stat(path, &st) == 0)
            return error_set(err, "%s: truncated while being read: the file now has %lld bytes, fewer than when it was opened",
                             path, (long long)st.st_size);
        return error_set(err, "%s: truncated or removed while being read: %s", path, strerror(errno));
    }
    guard_jump = &jump;
    int rc = read(arg, err);
    guard_jump = outer;
    return rc;
}
