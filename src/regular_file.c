// regular_file.c: see regular_file.h.
#define _FILE_OFFSET_BITS 64
#include "regular_file.h"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *kind_of(mode_t mode) {
    if (S_ISDIR(mode)) return "not a regular file (a directory)";
    if (S_ISFIFO(mode)) return "not a regular file (a FIFO)";
    if (S_ISCHR(mode)) return "not a regular file (a character device)";
    if (S_ISBLK(mode)) return "not a regular file (a block device)";
    if (S_ISSOCK(mode)) return "not a regular file (a socket)";
    return "not a regular file";
}

int regular_file_open(const char *path, int64_t *size, const char **why) {
    // O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting; fstat then
    // refuses it. (stat before open would leave a window for the path to be replaced.)
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        *why = strerror(errno);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *why = fstat(fd, &st) != 0 ? strerror(errno) : kind_of(st.st_mode);
        close(fd);
        return -1;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);   // plain blocking reads from here on
    *size = (int64_t)st.st_size;
    return fd;
}

int regular_file_check(const char *path, const char **why) {
    int64_t size;
    int fd = regular_file_open(path, &size, why);
    if (fd < 0) return -1;
    close(fd);
    return 0;
}
