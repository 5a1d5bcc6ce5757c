// config_include.c: see config_include.h.
#include "config_include.h"
#include <libconfig.h>
#include <stdio.h>
#include <string.h>
#include "config.h"
#include "regular_file.h"

// The path is resolved as the linked libconfig will: 1.5 puts the include dir in front of every
// name, an absolute one too ("DIR//abs/x.cfg", which then does not exist); 1.7 keeps absolute names.
#if LIBCONFIG_VER_MAJOR == 1 && LIBCONFIG_VER_MINOR < 7
#define PREFIXES_ABSOLUTE 1
#else
#define PREFIXES_ABSOLUTE 0
#endif

enum { INCLUDE_MAX_DEPTH = 10 };   // libconfig's own limit; deeper nesting is its error to report

static int check_file(const char *path, const char *shown, const char *include_dir, int depth, Error *err) {
    FILE *f = fopen(path, "r");   // already checked to be a regular file by the caller
    if (!f) return 0;            // libconfig reports it
    char line[4096];
    int in_comment = 0, rc = 0;
    for (unsigned n = 1; rc == 0 && fgets(line, sizeof line, f); n++) {
        char *p = line;
        int at_start = !in_comment;
        // Skip /* */ comments (a crude scan: enough to tell whether a line starts inside one).
        for (char *q = line; *q; q++) {
            if (!in_comment && q[0] == '/' && q[1] == '*') in_comment = 1, q++;
            else if (in_comment && q[0] == '*' && q[1] == '/') in_comment = 0, q++;
        }
        if (!at_start) continue;
        p += strspn(p, " \t");
        if (strncmp(p, "@include", 8) != 0 || (p[8] != ' ' && p[8] != '\t')) continue;
        p += 8 + strspn(p + 8, " \t");
        if (*p != '"') continue;   // not an include libconfig would read either: its parse error
        char *end = strchr(p + 1, '"');
        if (!end) continue;
        *end = 0;
        const char *name = p + 1;
        if (!name[0]) {
            rc = error_set(err, "%s:%u: cannot open include file \"\": an empty file name", shown, n);
            break;
        }
        char full[2 * CFG_PATH_LEN + 2];
        if (!include_dir || (PREFIXES_ABSOLUTE == 0 && name[0] == '/')) snprintf(full, sizeof full, "%s", name);
        else snprintf(full, sizeof full, "%s/%s", include_dir, name);
        const char *why;
        if (regular_file_check(full, &why)) {
            rc = error_set(err, "%s:%u: cannot open include file \"%s\" (%s): %s", shown, n, name, full, why);
            break;
        }
        if (depth + 1 < INCLUDE_MAX_DEPTH) rc = check_file(full, full, include_dir, depth + 1, err);
    }
    fclose(f);
    return rc;
}

int config_check_includes(const char *path, const char *shown, const char *include_dir, Error *err) {
    return check_file(path, shown, include_dir, 0, err);
}
