// cpu_kernels.c: see cpu_kernels.h.
#include "cpu_kernels.h"
#include <cpuid.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *const FEATURE_NAMES[CPU_NUM_FEATURES] = {
    [CPU_SSE3] = "sse3", [CPU_SSSE3] = "ssse3", [CPU_SSE4_1] = "sse4_1", [CPU_SSE4_2] = "sse4_2",
    [CPU_AVX] = "avx", [CPU_FMA] = "fma", [CPU_AVX2] = "avx2", [CPU_AVX512F] = "avx512f",
    [CPU_AVX512CD] = "avx512cd", [CPU_AVX512BW] = "avx512bw", [CPU_AVX512DQ] = "avx512dq",
    [CPU_AVX512VL] = "avx512vl", [CPU_AVX512_BF16] = "avx512_bf16",
};

#define SSE_UP_TO_4_2 (CPU_BIT(CPU_SSE3) | CPU_BIT(CPU_SSSE3) | CPU_BIT(CPU_SSE4_1) | CPU_BIT(CPU_SSE4_2))
#define AVX2_FMA (SSE_UP_TO_4_2 | CPU_BIT(CPU_AVX) | CPU_BIT(CPU_FMA) | CPU_BIT(CPU_AVX2))
#define AVX512_SKX (AVX2_FMA | CPU_BIT(CPU_AVX512F) | CPU_BIT(CPU_AVX512CD) | CPU_BIT(CPU_AVX512BW) | \
                    CPU_BIT(CPU_AVX512DQ) | CPU_BIT(CPU_AVX512VL))
#define ALL_AVX512 ((AVX512_SKX & ~AVX2_FMA) | CPU_BIT(CPU_AVX512_BF16))

// The x86-64 core types of OpenBLAS's DYNAMIC_ARCH builds that entrank forces or lets the
// environment force, best first, with every feature their kernels use. Types not here (the
// Bulldozer family needs AMD's FMA4/XOP, the 32-bit ones) are never forced by entrank, and the
// environment's are replaced. Cooperlake is never forced: OpenBLAS 0.3.21 does not accept the name
// in OPENBLAS_CORETYPE ("Core not found") and falls back to its own checks, the very ones that chose
// Haswell on the Zen 4; its sgemm kernels are SkylakeX's (it adds bf16 products entrank does not
// call), so SkylakeX is forced instead. An OpenBLAS that chose Cooperlake itself keeps it.
static const CoreType CORE_TYPES[] = {
    {"Cooperlake", AVX512_SKX | CPU_BIT(CPU_AVX512_BF16), 0},
    {"SkylakeX", AVX512_SKX, 1},
    {"Haswell", AVX2_FMA, 1},
    {"Zen", AVX2_FMA, 1},
    {"Sandybridge", SSE_UP_TO_4_2 | CPU_BIT(CPU_AVX), 1},
    {"Nehalem", SSE_UP_TO_4_2, 1},
    {"Core2", CPU_BIT(CPU_SSE3) | CPU_BIT(CPU_SSSE3), 1},
    {"Prescott", CPU_BIT(CPU_SSE3), 1},
};
enum { NUM_CORE_TYPES = sizeof CORE_TYPES / sizeof CORE_TYPES[0] };

const char *cpu_feature_name(CpuFeature f) {
    return (unsigned)f < CPU_NUM_FEATURES ? FEATURE_NAMES[f] : "?";
}

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

CpuidWords cpuid_read(void) {
    CpuidWords w = {0};
    unsigned a, b, c, d;
    w.max_leaf = __get_cpuid_max(0, NULL);
    if (w.max_leaf >= 1 && __get_cpuid(1, &a, &b, &c, &d)) w.leaf1_ecx = c;
    if (w.max_leaf >= 7 && __get_cpuid_count(7, 0, &a, &b, &c, &d)) { w.leaf7_eax = a; w.leaf7_ebx = b; }
    if (w.max_leaf >= 7 && w.leaf7_eax >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) w.leaf7_1_eax = a;
    // XGETBV faults unless the OS set CR4.OSXSAVE, which cpuid reports.
    if (w.leaf1_ecx & (1u << 27)) w.xcr0 = xgetbv0();
    return w;
}

CpuFeatures cpu_features_from_cpuid(const CpuidWords *w) {
    CpuFeatures f = 0;
    unsigned c1 = w->max_leaf >= 1 ? w->leaf1_ecx : 0;
    unsigned b7 = w->max_leaf >= 7 ? w->leaf7_ebx : 0;
    unsigned a71 = w->max_leaf >= 7 && w->leaf7_eax >= 1 ? w->leaf7_1_eax : 0;
    if (c1 & (1u << 0)) f |= CPU_BIT(CPU_SSE3);
    if (c1 & (1u << 9)) f |= CPU_BIT(CPU_SSSE3);
    if (c1 & (1u << 19)) f |= CPU_BIT(CPU_SSE4_1);
    if (c1 & (1u << 20)) f |= CPU_BIT(CPU_SSE4_2);
    // Instructions on registers whose state the OS does not save would fault (or corrupt other
    // processes' registers): each wider register file counts only when XCR0 enables it.
    uint64_t xcr0 = (c1 & (1u << 27)) ? w->xcr0 : 0;
    int ymm = (xcr0 & 0x6) == 0x6, zmm = ymm && (xcr0 & 0xe0) == 0xe0;
    if (ymm && (c1 & (1u << 28))) f |= CPU_BIT(CPU_AVX);
    if (ymm && (c1 & (1u << 12))) f |= CPU_BIT(CPU_FMA);
    if (ymm && (b7 & (1u << 5))) f |= CPU_BIT(CPU_AVX2);
    if (zmm) {
        static const struct { CpuFeature f; unsigned bit; } LEAF7_EBX_512[] = {
            {CPU_AVX512F, 16}, {CPU_AVX512DQ, 17}, {CPU_AVX512CD, 28}, {CPU_AVX512BW, 30}, {CPU_AVX512VL, 31}};
        for (size_t i = 0; i < sizeof LEAF7_EBX_512 / sizeof LEAF7_EBX_512[0]; i++)
            if (b7 & (1u << LEAF7_EBX_512[i].bit)) f |= CPU_BIT(LEAF7_EBX_512[i].f);
        if (a71 & (1u << 5)) f |= CPU_BIT(CPU_AVX512_BF16);
    }
    return f;
}

int cpu_features_hide(CpuFeatures cpu, const char *hide, CpuView *out, Error *err) {
    CpuFeatures mask = 0;
    const char *p = hide ? hide : "";
    while (*p) {
        size_t len = strcspn(p, ", ");
        if (len > 0) {
            int found = 0;
            if (len == 6 && !strncasecmp(p, "avx512", len)) { mask |= ALL_AVX512; found = 1; }
            for (int f = 0; f < CPU_NUM_FEATURES && !found; f++)
                if (strlen(FEATURE_NAMES[f]) == len && !strncasecmp(p, FEATURE_NAMES[f], len)) { mask |= CPU_BIT(f); found = 1; }
            if (!found) {
                char known[256];
                cpu_features_format((CpuFeatures)((1u << CPU_NUM_FEATURES) - 1), known, sizeof known);
                return error_set(err, "%s=%s: \"%.*s\" is no feature entrank knows (it knows avx512, all of AVX-512, and %s)",
                                 CPU_FEATURES_HIDE_ENV, hide, (int)(len > 40 ? 40 : len), p, known);
            }
        }
        p += len;
        p += strspn(p, ", ");
    }
    out->usable = cpu & ~mask;
    out->hidden = cpu & mask;
    return 0;
}

int cpu_view_read(CpuView *out, Error *err) {
    CpuidWords w = cpuid_read();
    return cpu_features_hide(cpu_features_from_cpuid(&w), getenv(CPU_FEATURES_HIDE_ENV), out, err);
}

void cpu_features_format(CpuFeatures f, char *buf, size_t n) {
    size_t used = 0;
    if (n == 0) return;
    buf[0] = 0;
    for (int i = 0; i < CPU_NUM_FEATURES; i++) {
        if (!(f & CPU_BIT(i))) continue;
        int k = snprintf(buf + used, n - used, "%s%s", used ? " " : "", FEATURE_NAMES[i]);
        if (k < 0 || (size_t)k >= n - used) return;   // truncated: what fits stays
        used += (size_t)k;
    }
    if (!used) snprintf(buf, n, "none");
}

const CoreType *core_types(size_t *count) {
    *count = NUM_CORE_TYPES;
    return CORE_TYPES;
}

const CoreType *core_type_find(const char *name) {
    for (size_t i = 0; name && i < NUM_CORE_TYPES; i++)
        if (!strcasecmp(name, CORE_TYPES[i].name)) return &CORE_TYPES[i];
    return NULL;
}

int core_type_supported(const CoreType *t, CpuFeatures usable) {
    return t && (t->requires & ~usable) == 0;
}

int core_type_is_avx512(const CoreType *t) {
    return t && (t->requires & CPU_BIT(CPU_AVX512F));
}

// The first type of the table that entrank forces and the CPU supports, among the AVX-512 ones when
// avx512_only.
static const CoreType *best_supported(CpuFeatures usable, int avx512_only) {
    for (size_t i = 0; i < NUM_CORE_TYPES; i++)
        if (CORE_TYPES[i].forced && core_type_supported(&CORE_TYPES[i], usable) &&
            (!avx512_only || core_type_is_avx512(&CORE_TYPES[i])))
            return &CORE_TYPES[i];
    return NULL;
}

KernelsChoice cpu_kernels_choose(const CpuView *cpu, const char *user, const char *own) {
    KernelsChoice c = {.force = NULL, .why = KERNELS_OPENBLAS_OWN};
    if (user) {
        c.user = core_type_find(user);
        if (core_type_supported(c.user, cpu->usable)) {
            c.force = c.user;
            c.why = KERNELS_FROM_ENVIRONMENT;
            return c;
        }
        c.user_replaced = 1;
        own = NULL;   // the library loaded the user's type: what it would choose itself is unknown
    }
    c.own = core_type_find(own);
    const CoreType *best_avx512 = best_supported(cpu->usable, 1);
    if (best_avx512 && !(core_type_is_avx512(c.own) && core_type_supported(c.own, cpu->usable))) {
        c.force = best_avx512;
        c.why = KERNELS_FORCED_AVX512;
        return c;
    }
    int own_stands = c.own ? core_type_supported(c.own, cpu->usable) : cpu->hidden == 0;
    if (!own_stands) {
        c.force = best_supported(cpu->usable, 0);
        // No type of the table fits (a CPU without SSE3): OpenBLAS's own checks are all there is.
        c.why = c.force ? KERNELS_FORCED_SUPPORTED : KERNELS_OPENBLAS_OWN;
    }
    return c;
}

// "needs F G, which this CPU lacks" for the features of t that `cpu` does not offer.
static void describe_missing(const CoreType *t, const CpuView *cpu, char *buf, size_t n) {
    char names[256];
    CpuFeatures missing = t->requires & ~cpu->usable;
    cpu_features_format(missing, names, sizeof names);
    int lacked = (missing & ~cpu->hidden) != 0, hidden = (missing & cpu->hidden) != 0;
    snprintf(buf, n, "needs %s, which %s", names,
             lacked && hidden ? "this CPU lacks or " CPU_FEATURES_HIDE_ENV " hides"
             : hidden ? CPU_FEATURES_HIDE_ENV " hides" : "this CPU lacks");
}

void cpu_kernels_explain(const KernelsChoice *c, const CpuView *cpu, const char *user, const char *own,
                         char *buf, size_t n) {
    char replaced[512] = "", missing[320];
    if (c->user_replaced) {
        if (c->user) describe_missing(c->user, cpu, missing, sizeof missing);
        else snprintf(missing, sizeof missing, "is not a core type of entrank's table (src/cpu_kernels.c)");
        snprintf(replaced, sizeof replaced, "the environment's OPENBLAS_CORETYPE=%.64s %s, so entrank replaced it: ",
                 user ? user : "", missing);
    }
    switch (c->why) {
    case KERNELS_FROM_ENVIRONMENT:
        snprintf(buf, n, "OPENBLAS_CORETYPE=%.64s from the environment", user ? user : "");
        return;
    case KERNELS_OPENBLAS_OWN:
        snprintf(buf, n, "%sOpenBLAS's own choice", replaced);
        return;
    case KERNELS_FORCED_AVX512: {
        char has[256];
        cpu_features_format(c->force->requires & ALL_AVX512, has, sizeof has);
        if (c->user_replaced)
            snprintf(buf, n, "%sforced %s: the CPU has %s", replaced, c->force->name, has);
        else {
            // OpenBLAS's AVX-512 choice was replaced only because it needs a feature hidden from it.
            char unsupported[352] = "";
            if (c->own) {
                describe_missing(c->own, cpu, missing, sizeof missing);
                snprintf(unsupported, sizeof unsupported, ", which %s", missing);
            }
            snprintf(buf, n, "forced %s: the CPU has %s, OpenBLAS chose %.64s%s", c->force->name, has, own ? own : "an unknown type",
                     core_type_supported(c->own, cpu->usable) || !c->own ? "" : unsupported);
        }
        return;
    }
    case KERNELS_FORCED_SUPPORTED:
        if (c->own) describe_missing(c->own, cpu, missing, sizeof missing);
        else snprintf(missing, sizeof missing, "may need features %s hides", CPU_FEATURES_HIDE_ENV);
        if (c->user_replaced)
            snprintf(buf, n, "%sforced %s, the best type the CPU supports (OpenBLAS's own choice is unknown and "
                             "may need features %s hides)", replaced, c->force->name, CPU_FEATURES_HIDE_ENV);
        else
            snprintf(buf, n, "forced %s, the best type the CPU supports: OpenBLAS chose %.64s, which %s", c->force->name,
                     own ? own : "an unknown type", missing);
        return;
    }
    snprintf(buf, n, "?");
}
