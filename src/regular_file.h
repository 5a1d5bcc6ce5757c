// regular_file.h: opening a file the user named (config, data, checkpoint) only if it is a regular
// file. A FIFO would block open() for ever waiting for a writer, a directory reads as empty or
// fails deep inside a library (libconfig's scanner, MPI-IO), a device may never end.
#pragma once
#include <stdint.h>

// Opens `path` read-only without blocking and checks that it is a regular file. Returns the fd
// (close it) with *size set, or -1 with *why a reason for the message ("PATH: cannot open: WHY"):
// strerror(errno), or "not a regular file (a FIFO)" and the like.
int regular_file_open(const char *path, int64_t *size, const char **why);

// The same check without keeping the file open: 0, or -1 with *why set.
int regular_file_check(const char *path, const char **why);
