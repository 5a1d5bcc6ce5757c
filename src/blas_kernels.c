// blas_kernels.c: see blas_kernels.h.
#include "blas_kernels.h"
#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "common.h"
#include "cpu_kernels.h"

#define CORETYPE_ENV "OPENBLAS_CORETYPE"
// This process's OPENBLAS_CORETYPE (set, or removed) is entrank's.
#define MARK_SET "ENTRANK_SET_OPENBLAS_CORETYPE"
// The type OpenBLAS chose by itself in the process that executed this one.
#define MARK_OWN "ENTRANK_OPENBLAS_OWN_CHOICE"
// The environment's OPENBLAS_CORETYPE that entrank replaced.
#define MARK_REPLACED "ENTRANK_REPLACED_OPENBLAS_CORETYPE"

int blas_kernels_marked(void) {
    return getenv(MARK_SET) != NULL;
}

const char *blas_kernels_running(void) {
    const char *name = openblas_get_corename();
    return name ? name : "unknown";
}

static void clear_marks(void) {
    unsetenv(MARK_SET);
    unsetenv(MARK_OWN);
    unsetenv(MARK_REPLACED);
}

BlasKernelsPlan blas_kernels_prepare(void) {
    BlasKernelsPlan plan = {0};
    if (blas_kernels_marked()) return plan;
    CpuView cpu;
    Error err = {{0}};
    if (cpu_view_read(&cpu, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    // Copies: setenv below may replace the strings getenv returned. The environment's value is kept
    // whole (plan.original), for restoring it if the execution fails.
    const char *env = getenv(CORETYPE_ENV);
    const char *user = env ? (plan.original = xstrdup(env)) : NULL;
    char own[64];
    snprintf(own, sizeof own, "%s", blas_kernels_running());
    KernelsChoice c = cpu_kernels_choose(&cpu, user, user ? NULL : own);
    plan.changed = c.user_replaced || (c.force && c.why != KERNELS_FROM_ENVIRONMENT);
    if (!plan.changed) return plan;
    if (c.user_replaced) {
        // What loaded here is the environment's type, or OpenBLAS's fallback for a name it does not
        // know: safe only when it is a type of the table that the CPU (hidden features included) runs.
        const CoreType *loaded = core_type_find(own);
        plan.unsafe_here = !core_type_supported(loaded, cpu.usable | cpu.hidden);
        char reason[512];
        cpu_kernels_explain(&c, &cpu, user, NULL, reason, sizeof reason);
        snprintf(plan.why, sizeof plan.why, "OpenBLAS loaded %s (%s)", own, reason);
    }
    int failed = setenv(MARK_SET, "1", 1) || (!user && setenv(MARK_OWN, own, 1)) || (user && setenv(MARK_REPLACED, user, 1)) ||
                 (c.force ? setenv(CORETYPE_ENV, c.force->name, 1) : unsetenv(CORETYPE_ENV));
    if (failed) {
        // Out of environment space: this process runs what it loaded, which the log reports.
        blas_kernels_exec_failed(&plan, ENOMEM);
        plan.changed = 0;
    }
    return plan;
}

void blas_kernels_exec_failed(const BlasKernelsPlan *plan, int exec_errno) {
    if (!plan->changed) return;
    if (plan->original) setenv(CORETYPE_ENV, plan->original, 1);
    else unsetenv(CORETYPE_ENV);
    clear_marks();
    if (plan->unsafe_here)
        die(EXIT_FAILURE_OTHER, "%s; entrank could not execute itself to change it (%s): unset %s", plan->why,
            strerror(exec_errno), CORETYPE_ENV);
}

void blas_kernels_describe(char *buf, size_t n) {
    const char *running = blas_kernels_running();
    char config[256];
    const char *c_config = openblas_get_config();
    snprintf(config, sizeof config, "%s", c_config ? c_config : "OpenBLAS (no configuration string)");
    for (size_t len = strlen(config); len > 0 && config[len - 1] == ' '; len--) config[len - 1] = 0;
    CpuView cpu;
    Error err = {{0}};
    if (cpu_view_read(&cpu, &err)) {
        snprintf(buf, n, "blas: %s, kernels %s (%s)", config, running, err.msg);
        return;
    }
    int marked = blas_kernels_marked();
    const char *user = marked ? getenv(MARK_REPLACED) : getenv(CORETYPE_ENV);
    const char *own = marked ? getenv(MARK_OWN) : user ? NULL : running;
    KernelsChoice c = cpu_kernels_choose(&cpu, user, own);
    char why[1024], note[256] = "", usable[256], hidden[256] = "";
    cpu_kernels_explain(&c, &cpu, user, own, why, sizeof why);
    // Unmarked, a choice that needed a new process says the execution did not happen.
    int applied = marked || (!c.user_replaced && (!c.force || c.why == KERNELS_FROM_ENVIRONMENT));
    if (!applied)
        snprintf(note, sizeof note, "; not applied: entrank could not execute itself with its choice");
    else if (c.force && strcasecmp(running, c.force->name))
        snprintf(note, sizeof note, "; OpenBLAS runs %s, not the %s asked for", running, c.force->name);
    cpu_features_format(cpu.usable, usable, sizeof usable);
    if (cpu.hidden) {
        char names[160];
        cpu_features_format(cpu.hidden, names, sizeof names);
        snprintf(hidden, sizeof hidden, " (hidden by %s: %s)", CPU_FEATURES_HIDE_ENV, names);
    }
    snprintf(buf, n, "blas: %s, kernels %s (%s%s); cpu: %s%s", config, running, why, note, usable, hidden);
}
