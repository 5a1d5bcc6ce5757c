// config_include.h: the `@include` lines of a config file, checked before libconfig reads them.
// libconfig 1.5 opens an included path with fopen: a directory (or `@include ""`, which names the
// include directory itself) then fails inside its scanner with "input in flex scanner failed" and
// no file name, and a FIFO blocks for ever.
#pragma once
#include "common.h"

// Every `@include "X"` of `path` (as libconfig's scanner sees them: at the start of a line, outside
// /* */ comments), recursively, must name a regular file; X is relative to `include_dir` (libconfig
// 1.5 resolves nested and even absolute names against that one directory). `shown` is the
// name `path` has in messages. Returns 0, or -1 with "SHOWN:LINE: cannot open include file \"X\" ..." in err.
int config_check_includes(const char *path, const char *shown, const char *include_dir, Error *err);
