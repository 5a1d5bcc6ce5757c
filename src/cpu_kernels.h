// cpu_kernels.h: which OpenBLAS kernels (core types) this CPU may run, and which entrank asks for
// (README.md, "Parallel runs"; issue 21).
//
// Debian's OpenBLAS is a DYNAMIC_ARCH build: when it loads it picks one kernel set, a "core type",
// and it may pick less than the CPU can run: 0.3.21 chose its AVX2 Haswell kernels on a Zen 4 that
// has AVX-512, where SkylakeX's made GEMM-bound steps 1.6-1.8x faster. OPENBLAS_CORETYPE, read when
// the library loads, forces a type, but 0.3.21 does not check that the CPU can run it: SkylakeX on
// a CPU without AVX-512 dies with SIGILL (exit 132) at the first GEMM. So the choice is made here,
// from what cpuid reports and what the OS saves (XCR0), against one table of the types and the
// features each needs; everything but reading the CPU is a pure function, so that the tests can
// give any CPU, including AVX-512 ones this machine is not.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "common.h"

// Instruction-set features the kernels of some core type need. The names (cpu_feature_name) are
// /proc/cpuinfo's flags, except sse3, which it calls "pni".
typedef enum {
    CPU_SSE3, CPU_SSSE3, CPU_SSE4_1, CPU_SSE4_2, CPU_AVX, CPU_FMA, CPU_AVX2,
    CPU_AVX512F, CPU_AVX512CD, CPU_AVX512BW, CPU_AVX512DQ, CPU_AVX512VL, CPU_AVX512_BF16,
    CPU_NUM_FEATURES
} CpuFeature;

#define CPU_BIT(f) (1u << (f))
// A set of features, bit CPU_BIT(f) for feature f.
typedef uint32_t CpuFeatures;

// The cpuid and XCR0 words the features are read from, as the CPU returns them.
typedef struct {
    unsigned max_leaf;        // leaf 0, eax: the highest standard leaf
    unsigned leaf1_ecx;       // SSE3 0, SSSE3 9, FMA 12, SSE4.1 19, SSE4.2 20, OSXSAVE 27, AVX 28
    unsigned leaf7_eax;       // leaf 7 subleaf 0, eax: the highest subleaf of leaf 7
    unsigned leaf7_ebx;       // AVX2 5, AVX-512 F 16, DQ 17, CD 28, BW 30, VL 31
    unsigned leaf7_1_eax;     // leaf 7 subleaf 1: AVX512_BF16 5
    uint64_t xcr0;            // XGETBV(0), read only when OSXSAVE: YMM state bits 1-2, opmask/ZMM 5-7
} CpuidWords;

// A CPU as the choice sees it: `usable`, the features the kernels may use; `hidden`, those the CPU
// has that ENTRANK_CPU_FEATURES_HIDE took away.
typedef struct {
    CpuFeatures usable, hidden;
} CpuView;

// One kernel set of OpenBLAS, by the name it has in OPENBLAS_CORETYPE and openblas_get_corename().
typedef struct {
    const char *name;
    CpuFeatures requires;
    int forced;   // entrank sets it in OPENBLAS_CORETYPE (0: recognised as OpenBLAS's choice only)
} CoreType;

// The environment variable that hides features from the choice (a comma-separated list of
// cpu_feature_name names, or "avx512" for all of AVX-512): to make a CPU with AVX-512 run as one
// without. It can only remove features.
#define CPU_FEATURES_HIDE_ENV "ENTRANK_CPU_FEATURES_HIDE"

const char *cpu_feature_name(CpuFeature f);

// The words of the CPU this runs on.
CpuidWords cpuid_read(void);

// The features that both the CPU implements and the OS has enabled: AVX, FMA and AVX2 need the YMM
// state (XCR0 bits 1-2), AVX-512 also the opmask and ZMM state (bits 5-7); without OSXSAVE there is
// no XCR0 and so none of them.
CpuFeatures cpu_features_from_cpuid(const CpuidWords *w);

// `cpu` without the features that `hide` names (NULL or "": none). Returns -1 with err set when a
// name is not a feature; the result is always a subset of `cpu`.
int cpu_features_hide(CpuFeatures cpu, const char *hide, CpuView *out, Error *err);

// This CPU as the choice sees it: cpuid_read, cpu_features_from_cpuid, then the environment's
// CPU_FEATURES_HIDE_ENV. Returns -1 with err set when that variable names no feature.
int cpu_view_read(CpuView *out, Error *err);

// The space-separated names of the features in `f`, "none" for none.
void cpu_features_format(CpuFeatures f, char *buf, size_t n);

// The table's entry for an OpenBLAS core type name (case-insensitive, as OpenBLAS compares), or
// NULL when the table has none.
const CoreType *core_type_find(const char *name);

// The table, best first; *count receives its length.
const CoreType *core_types(size_t *count);

int core_type_supported(const CoreType *t, CpuFeatures usable);
int core_type_is_avx512(const CoreType *t);

typedef enum {
    KERNELS_OPENBLAS_OWN,        // OPENBLAS_CORETYPE stays unset: OpenBLAS's own choice runs
    KERNELS_FROM_ENVIRONMENT,    // the environment's OPENBLAS_CORETYPE, which the CPU supports
    KERNELS_FORCED_AVX512,       // forced: the CPU has AVX-512 and OpenBLAS did not choose it
    KERNELS_FORCED_SUPPORTED,    // forced: OpenBLAS's choice needs features the CPU lacks or hides
} KernelsWhy;

// What OPENBLAS_CORETYPE the process that runs the GEMMs must see.
typedef struct {
    const CoreType *force;       // the type to set; NULL: none (OpenBLAS chooses)
    KernelsWhy why;
    int user_replaced;           // the environment named a type that is unknown or unsupported
    const CoreType *user;        // the table's entry for the environment's type (NULL: none or unknown)
    const CoreType *own;         // the table's entry for OpenBLAS's own choice (NULL: unknown or not in it)
} KernelsChoice;

// The core type to run, from this CPU's usable features, the environment's OPENBLAS_CORETYPE (NULL
// when unset) and the type OpenBLAS chose by itself (NULL when unknown: it loaded the user's).
//  - The user's type stands when the CPU supports it; one that it does not, or that the table does
//    not know, is never run: it is replaced by what follows, as if the environment named none.
//  - With AVX-512 on the CPU and OS, and OpenBLAS's choice not an AVX-512 type the CPU supports:
//    the best AVX-512 type the CPU supports.
//  - Otherwise OpenBLAS's choice stands when the CPU supports it. A choice the table does not know
//    (or an unknown one) stands when nothing is hidden (OpenBLAS checks the real CPU itself); with
//    features hidden, or a choice the CPU lacks the features of, the best type the CPU supports.
// Whatever is forced, its requirements are in cpu->usable.
KernelsChoice cpu_kernels_choose(const CpuView *cpu, const char *user, const char *own);

// Why `c` runs what it runs, in words for the run log (no trailing newline); `user` and `own` as
// given to cpu_kernels_choose.
void cpu_kernels_explain(const KernelsChoice *c, const CpuView *cpu, const char *user, const char *own,
                         char *buf, size_t n);
