// test_cpu_kernels: which OpenBLAS core type entrank lets run (src/cpu_kernels.h), on fabricated
// cpuid and XCR0 words, so that CPUs with AVX-512 are covered on machines without it: the features
// read from the words, the choice for every CPU x OpenBLAS's own choice x the environment's
// OPENBLAS_CORETYPE x hidden features (and that no combination runs a type the CPU lacks the
// features of), and that ENTRANK_CPU_FEATURES_HIDE can only take features away.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <cmocka.h>
#include "cpu_kernels.h"

// cpuid bits (Intel SDM vol. 2A, CPUID) and XCR0 states.
enum {
    L1_SSE3 = 1 << 0, L1_SSSE3 = 1 << 9, L1_FMA = 1 << 12, L1_SSE41 = 1 << 19, L1_SSE42 = 1 << 20,
    L1_OSXSAVE = 1 << 27, L1_AVX = 1 << 28,
};
#define L7_AVX2 (1u << 5)
#define L7_512F (1u << 16)
#define L7_512DQ (1u << 17)
#define L7_512CD (1u << 28)
#define L7_512BW (1u << 30)
#define L7_512VL (1u << 31)
#define L71_BF16 (1u << 5)
#define XCR0_SSE 0x3u
#define XCR0_YMM 0x7u
#define XCR0_ZMM 0xe7u

#define L1_ALL_SSE (L1_SSE3 | L1_SSSE3 | L1_SSE41 | L1_SSE42)
#define L1_AVX2_CPU (L1_ALL_SSE | L1_FMA | L1_OSXSAVE | L1_AVX)
#define L7_SKX (L7_AVX2 | L7_512F | L7_512DQ | L7_512CD | L7_512BW | L7_512VL)

#define F(x) CPU_BIT(CPU_##x)
#define SSE_SET (F(SSE3) | F(SSSE3) | F(SSE4_1) | F(SSE4_2))
#define AVX2_SET (SSE_SET | F(AVX) | F(FMA) | F(AVX2))
#define SKX_SET (AVX2_SET | F(AVX512F) | F(AVX512CD) | F(AVX512BW) | F(AVX512DQ) | F(AVX512VL))

// The CPUs of the tests, as cpuid and XGETBV report them, with the features that must come out.
static const struct {
    const char *label;
    CpuidWords words;
    CpuFeatures expected;
    const char *best;           // the best type of the table it supports (NULL: none)
} CPUS[] = {
    {"no features", {.max_leaf = 7}, 0, NULL},
    {"SSE only", {.max_leaf = 7, .leaf1_ecx = L1_ALL_SSE}, SSE_SET, "Nehalem"},
    {"AVX2+FMA (Zen 3)", {.max_leaf = 16, .leaf1_ecx = L1_AVX2_CPU, .leaf7_ebx = L7_AVX2, .xcr0 = XCR0_YMM}, AVX2_SET, "Haswell"},
    {"AVX2 without the OS's YMM state", {.max_leaf = 16, .leaf1_ecx = L1_AVX2_CPU, .leaf7_ebx = L7_AVX2, .xcr0 = XCR0_SSE},
     SSE_SET, "Nehalem"},
    {"AVX2 without OSXSAVE (XCR0 unreadable)", {.max_leaf = 16, .leaf1_ecx = L1_AVX2_CPU & ~L1_OSXSAVE,
     .leaf7_ebx = L7_SKX, .xcr0 = XCR0_ZMM}, SSE_SET, "Nehalem"},
    {"AVX-512 F only", {.max_leaf = 16, .leaf1_ecx = L1_AVX2_CPU, .leaf7_ebx = L7_AVX2 | L7_512F, .xcr0 = XCR0_ZMM},
     AVX2_SET | F(AVX512F), "Haswell"},
    {"AVX-512 F/CD/BW/DQ/VL (Skylake-SP)", {.max_leaf = 22, .leaf1_ecx = L1_AVX2_CPU, .leaf7_ebx = L7_SKX, .xcr0 = XCR0_ZMM},
     SKX_SET, "SkylakeX"},
    {"AVX-512 with BF16 (Zen 4, Cooper Lake)", {.max_leaf = 16, .leaf1_ecx = L1_AVX2_CPU, .leaf7_eax = 1, .leaf7_ebx = L7_SKX,
     .leaf7_1_eax = L71_BF16, .xcr0 = XCR0_ZMM}, SKX_SET | F(AVX512_BF16), "Cooperlake"},
    {"BF16 bit without leaf 7 subleaf 1", {.max_leaf = 16, .leaf1_ecx = L1_AVX2_CPU, .leaf7_eax = 0, .leaf7_ebx = L7_SKX,
     .leaf7_1_eax = L71_BF16, .xcr0 = XCR0_ZMM}, SKX_SET, "SkylakeX"},
    {"AVX-512 in cpuid, ZMM state off in XCR0", {.max_leaf = 16, .leaf1_ecx = L1_AVX2_CPU, .leaf7_eax = 1, .leaf7_ebx = L7_SKX,
     .leaf7_1_eax = L71_BF16, .xcr0 = XCR0_YMM}, AVX2_SET, "Haswell"},
    {"AVX-512 in cpuid, opmask state only", {.max_leaf = 16, .leaf1_ecx = L1_AVX2_CPU, .leaf7_ebx = L7_SKX,
     .xcr0 = XCR0_YMM | 0x20}, AVX2_SET, "Haswell"},
    {"leaf 7 bits beyond the highest leaf", {.max_leaf = 6, .leaf1_ecx = L1_AVX2_CPU, .leaf7_eax = 1, .leaf7_ebx = L7_SKX,
     .leaf7_1_eax = L71_BF16, .xcr0 = XCR0_ZMM}, SSE_SET | F(AVX) | F(FMA), "Sandybridge"},
};
enum { NUM_CPUS = sizeof CPUS / sizeof CPUS[0] };

static CpuView view_of(CpuFeatures cpu, const char *hide) {
    CpuView v;
    Error err = {{0}};
    assert_int_equal(cpu_features_hide(cpu, hide, &v, &err), 0);
    return v;
}

static int is_subset(CpuFeatures a, CpuFeatures b) {
    return (a & ~b) == 0;
}

static void test_features_come_from_cpuid_and_the_state_the_os_saves(void **state) {
    (void)state;
    for (int i = 0; i < NUM_CPUS; i++) {
        CpuFeatures f = cpu_features_from_cpuid(&CPUS[i].words);
        char got[256], want[256];
        cpu_features_format(f, got, sizeof got);
        cpu_features_format(CPUS[i].expected, want, sizeof want);
        printf("# %-42s %s\n", CPUS[i].label, got);
        if (f != CPUS[i].expected) fail_msg("%s: features %s, expected %s", CPUS[i].label, got, want);
    }
}

static void test_this_machines_cpu_reads_consistently(void **state) {
    (void)state;
    CpuidWords w = cpuid_read();
    CpuFeatures f = cpu_features_from_cpuid(&w);
    char names[256];
    cpu_features_format(f, names, sizeof names);
    printf("# this CPU: %s\n", names);
    // Wider registers imply the narrower ones' state, and every x86-64 CPU that has AVX has SSE3.
    if (f & F(AVX2)) assert_true(f & F(AVX));
    if (f & F(AVX512F)) assert_true(f & F(AVX2));
    if (f & F(AVX)) assert_true(f & F(SSE3));
    assert_int_equal(cpu_features_from_cpuid(&w), f);
}

// The table: unique names, every AVX-512 type before every other (the best AVX-512 one is the
// first that fits), and the lookup case-insensitive as OpenBLAS's.
static void test_core_type_table(void **state) {
    (void)state;
    size_t n;
    const CoreType *t = core_types(&n);
    assert_true(n >= 4);
    int seen_non_avx512 = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = i + 1; j < n; j++) assert_true(strcasecmp(t[i].name, t[j].name) != 0);
        if (!core_type_is_avx512(&t[i])) seen_non_avx512 = 1;
        else assert_false(seen_non_avx512);
        assert_ptr_equal(core_type_find(t[i].name), &t[i]);
    }
    assert_string_equal(core_type_find("SKYLAKEX")->name, "SkylakeX");
    assert_string_equal(core_type_find("zen")->name, "Zen");
    assert_null(core_type_find("Bulldozer"));
    assert_null(core_type_find(""));
    assert_null(core_type_find(NULL));
}

// The type that runs: the forced one, or OpenBLAS's own (`own`, NULL when unknown).
static void assert_runs_only_what_the_cpu_supports(const KernelsChoice *c, const CpuView *v, const char *own, const char *what) {
    if (c->force) {
        if (!core_type_supported(c->force, v->usable)) fail_msg("%s: forced %s, which the CPU does not support", what, c->force->name);
        // entrank itself sets only names the installed OpenBLAS accepts (not Cooperlake).
        if (c->why != KERNELS_FROM_ENVIRONMENT && !c->force->forced) fail_msg("%s: entrank forced %s", what, c->force->name);
        return;
    }
    const CoreType *own_type = c->user_replaced ? NULL : core_type_find(own);
    if (own_type) {
        if (!core_type_supported(own_type, v->usable)) fail_msg("%s: %s stands, which the CPU does not support", what, own_type->name);
    } else if (v->hidden) {
        // A type entrank cannot check runs only where nothing is hidden: OpenBLAS checked the real CPU.
        fail_msg("%s: an unchecked type stands while features are hidden", what);
    }
}

// Every CPU (as it is and with AVX-512 or AVX2 hidden) x every own choice OpenBLAS could make on
// it x the environment's OPENBLAS_CORETYPE: never a type the CPU lacks the features of, a supported
// environment type always stands, an unsupported or unknown one never.
static void test_no_combination_selects_an_unsupported_core_type(void **state) {
    (void)state;
    const char *hides[] = {NULL, "avx512", "avx512_bf16", "avx2", "avx512,avx2,fma"};
    const char *users[] = {NULL, "SKYLAKEX", "cooperlake", "Haswell", "Zen", "Sandybridge", "Prescott", "bogus", "Bulldozer", ""};
    size_t n_types;
    const CoreType *table = core_types(&n_types);
    long combinations = 0;
    for (int i = 0; i < NUM_CPUS; i++) {
        CpuFeatures real = cpu_features_from_cpuid(&CPUS[i].words);
        // OpenBLAS picks by the real CPU: any type of the table it runs, or one the table lacks.
        const char *owns[16];
        int n_own = 0;
        for (size_t k = 0; k < n_types; k++)
            if (core_type_supported(&table[k], real)) owns[n_own++] = table[k].name;
        owns[n_own++] = "Excavator";
        owns[n_own++] = "Unknown";
        for (size_t h = 0; h < sizeof hides / sizeof hides[0]; h++) {
            CpuView v = view_of(real, hides[h]);
            for (size_t u = 0; u < sizeof users / sizeof users[0]; u++) {
                for (int o = 0; o < (users[u] ? 1 : n_own); o++) {
                    const char *own = users[u] ? NULL : owns[o];
                    KernelsChoice c = cpu_kernels_choose(&v, users[u], own);
                    char what[256], why[2048];
                    snprintf(what, sizeof what, "%s, hide %s, OPENBLAS_CORETYPE %s, OpenBLAS chose %s", CPUS[i].label,
                             hides[h] ? hides[h] : "-", users[u] ? users[u] : "-", own ? own : "?");
                    assert_runs_only_what_the_cpu_supports(&c, &v, own, what);
                    const CoreType *user_type = core_type_find(users[u]);
                    if (users[u] && core_type_supported(user_type, v.usable)) {
                        assert_ptr_equal(c.force, user_type);
                        assert_int_equal(c.why, KERNELS_FROM_ENVIRONMENT);
                    } else {
                        assert_int_equal(c.user_replaced, users[u] != NULL);
                        assert_int_not_equal(c.why, KERNELS_FROM_ENVIRONMENT);
                    }
                    // With AVX-512 usable, an AVX-512 type runs whatever OpenBLAS or the user chose
                    // (except a supported user's type, which stands).
                    int has_avx512_type = CPUS[i].best && core_type_is_avx512(core_type_find(CPUS[i].best)) &&
                                          core_type_supported(core_type_find(CPUS[i].best), v.usable);
                    if (has_avx512_type && c.why != KERNELS_FROM_ENVIRONMENT && !c.force)
                        assert_true(core_type_is_avx512(core_type_find(own)));
                    cpu_kernels_explain(&c, &v, users[u], own, why, sizeof why);
                    assert_true(strlen(why) > 0);
                    combinations++;
                }
            }
        }
    }
    printf("# %ld combinations\n", combinations);
}

// The exact choice in the cases the issue names.
static void test_exact_choices(void **state) {
    (void)state;
    const struct {
        int cpu;                // index into CPUS
        const char *hide, *user, *own;
        const char *force;      // NULL: OPENBLAS_CORETYPE unset
        KernelsWhy why;
        int replaced;
    } cases[] = {
        // Without AVX-512 nothing changes: OpenBLAS's own choice runs.
        {2, NULL, NULL, "Zen", NULL, KERNELS_OPENBLAS_OWN, 0},
        {2, NULL, NULL, "Haswell", NULL, KERNELS_OPENBLAS_OWN, 0},
        {2, NULL, NULL, "Excavator", NULL, KERNELS_OPENBLAS_OWN, 0},
        {3, NULL, NULL, "Nehalem", NULL, KERNELS_OPENBLAS_OWN, 0},
        {5, NULL, NULL, "Haswell", NULL, KERNELS_OPENBLAS_OWN, 0},        // AVX-512 F alone runs no AVX-512 type
        {9, NULL, NULL, "Haswell", NULL, KERNELS_OPENBLAS_OWN, 0},        // ZMM state off
        // The SIGILL of the issue: SKYLAKEX where there is no AVX-512 is replaced, never run.
        {2, NULL, "SKYLAKEX", NULL, NULL, KERNELS_OPENBLAS_OWN, 1},
        {9, NULL, "SKYLAKEX", NULL, NULL, KERNELS_OPENBLAS_OWN, 1},
        {2, NULL, "bogus", NULL, NULL, KERNELS_OPENBLAS_OWN, 1},
        {2, NULL, "Haswell", NULL, "Haswell", KERNELS_FROM_ENVIRONMENT, 0},
        {2, NULL, "sandybridge", NULL, "Sandybridge", KERNELS_FROM_ENVIRONMENT, 0},
        // With AVX-512: the best AVX-512 type when OpenBLAS chose none.
        {6, NULL, NULL, "Haswell", "SkylakeX", KERNELS_FORCED_AVX512, 0},
        // Cooperlake is never forced (0.3.21 refuses the name and falls back to Haswell): SkylakeX.
        {7, NULL, NULL, "Haswell", "SkylakeX", KERNELS_FORCED_AVX512, 0},
        {7, NULL, NULL, "Zen", "SkylakeX", KERNELS_FORCED_AVX512, 0},
        {7, NULL, NULL, "Excavator", "SkylakeX", KERNELS_FORCED_AVX512, 0},
        {7, NULL, NULL, "Cooperlake", NULL, KERNELS_OPENBLAS_OWN, 0},     // chosen by OpenBLAS: it stands
        {7, NULL, NULL, "SkylakeX", NULL, KERNELS_OPENBLAS_OWN, 0},       // already AVX-512: it stands
        {6, NULL, NULL, "SkylakeX", NULL, KERNELS_OPENBLAS_OWN, 0},
        {7, NULL, "Haswell", NULL, "Haswell", KERNELS_FROM_ENVIRONMENT, 0},
        {6, NULL, "Cooperlake", NULL, "SkylakeX", KERNELS_FORCED_AVX512, 1},   // no BF16: replaced
        {7, NULL, "bogus", NULL, "SkylakeX", KERNELS_FORCED_AVX512, 1},
        // Hidden AVX-512: the CPU runs as one without it.
        {7, "avx512", NULL, "Haswell", NULL, KERNELS_OPENBLAS_OWN, 0},
        {6, "avx512", NULL, "SkylakeX", "Haswell", KERNELS_FORCED_SUPPORTED, 0},
        {7, "avx512", NULL, "Excavator", "Haswell", KERNELS_FORCED_SUPPORTED, 0},
        {7, "avx512", "SKYLAKEX", NULL, "Haswell", KERNELS_FORCED_SUPPORTED, 1},
        {7, "avx512_bf16", NULL, "Cooperlake", "SkylakeX", KERNELS_FORCED_AVX512, 0},
        {2, "avx2", NULL, "Zen", "Sandybridge", KERNELS_FORCED_SUPPORTED, 0},
        // No type of the table fits (no SSE3): OpenBLAS's own checks decide.
        {0, NULL, NULL, "Unknown", NULL, KERNELS_OPENBLAS_OWN, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CpuView v = view_of(cpu_features_from_cpuid(&CPUS[cases[i].cpu].words), cases[i].hide);
        KernelsChoice c = cpu_kernels_choose(&v, cases[i].user, cases[i].own);
        char why[2048];
        cpu_kernels_explain(&c, &v, cases[i].user, cases[i].own, why, sizeof why);
        printf("# %-40s hide %-11s env %-10s own %-9s -> %-10s %s\n", CPUS[cases[i].cpu].label, cases[i].hide ? cases[i].hide : "-",
               cases[i].user ? cases[i].user : "-", cases[i].own ? cases[i].own : "-", c.force ? c.force->name : "(unset)", why);
        if (cases[i].force) {
            assert_non_null(c.force);
            assert_string_equal(c.force->name, cases[i].force);
        } else {
            assert_null(c.force);
        }
        assert_int_equal(c.why, cases[i].why);
        assert_int_equal(c.user_replaced, cases[i].replaced);
    }
}

static void test_explanations_name_the_reason(void **state) {
    (void)state;
    char why[2048];
    CpuView zen3 = view_of(CPUS[2].expected, NULL), zen4 = view_of(CPUS[7].expected, NULL), skx = view_of(CPUS[6].expected, NULL);
    KernelsChoice c = cpu_kernels_choose(&zen3, NULL, "Zen");
    cpu_kernels_explain(&c, &zen3, NULL, "Zen", why, sizeof why);
    assert_string_equal(why, "OpenBLAS's own choice");
    c = cpu_kernels_choose(&zen3, "SKYLAKEX", NULL);
    cpu_kernels_explain(&c, &zen3, "SKYLAKEX", NULL, why, sizeof why);
    assert_string_equal(why, "the environment's OPENBLAS_CORETYPE=SKYLAKEX needs avx512f avx512cd avx512bw avx512dq avx512vl, "
                             "which this CPU lacks, so entrank replaced it: OpenBLAS's own choice");
    c = cpu_kernels_choose(&skx, NULL, "Haswell");
    cpu_kernels_explain(&c, &skx, NULL, "Haswell", why, sizeof why);
    assert_string_equal(why, "forced SkylakeX: the CPU has avx512f avx512cd avx512bw avx512dq avx512vl, OpenBLAS chose Haswell");
    c = cpu_kernels_choose(&zen4, NULL, "Haswell");
    cpu_kernels_explain(&c, &zen4, NULL, "Haswell", why, sizeof why);
    assert_string_equal(why, "forced SkylakeX: the CPU has avx512f avx512cd avx512bw avx512dq avx512vl, OpenBLAS chose Haswell");
    CpuView hidden = view_of(CPUS[7].expected, "avx512");
    c = cpu_kernels_choose(&hidden, NULL, "Cooperlake");
    cpu_kernels_explain(&c, &hidden, NULL, "Cooperlake", why, sizeof why);
    assert_non_null(strstr(why, "forced Haswell"));
    assert_non_null(strstr(why, "which ENTRANK_CPU_FEATURES_HIDE hides"));
}

// Hiding: names (any case, commas or spaces), the avx512 group, and an unknown name refused.
static void test_hiding_removes_features(void **state) {
    (void)state;
    CpuFeatures zen4 = CPUS[7].expected;
    CpuView v = view_of(zen4, "avx512");
    assert_int_equal(v.usable, AVX2_SET);
    assert_int_equal(v.hidden, zen4 & ~AVX2_SET);
    v = view_of(zen4, " AVX2, fma ");
    assert_int_equal(v.usable, zen4 & ~(F(AVX2) | F(FMA)));
    assert_int_equal(v.hidden, F(AVX2) | F(FMA));
    v = view_of(zen4, "avx512_bf16");
    assert_int_equal(v.usable, SKX_SET);
    v = view_of(zen4, NULL);
    assert_int_equal(v.usable, zen4);
    assert_int_equal(v.hidden, 0);
    v = view_of(AVX2_SET, "avx512");   // hiding what the CPU lacks hides nothing
    assert_int_equal(v.usable, AVX2_SET);
    assert_int_equal(v.hidden, 0);
    Error err = {{0}};
    assert_int_equal(cpu_features_hide(zen4, "avx2,avx513", &v, &err), -1);
    assert_non_null(strstr(err.msg, "\"avx513\" is no feature entrank knows"));
}

// No string makes a CPU look as if it had a feature it lacks: fixed attempts, then 20000 random
// strings of feature-name fragments and punctuation.
static void test_no_string_adds_a_feature(void **state) {
    (void)state;
    const char *attempts[] = {"", ",", " ", "+avx512", "avx512=1", "-avx512", "!avx2", "avx512f=on", "all", "none",
                              "sse3,+avx2", "avx2+", "AVX512F AVX512CD", "avx512,,avx2", "\t", "avx512\n", "cooperlake"};
    const char *pieces[] = {"avx", "512", "f", "_bf16", "2", "+", "-", ",", " ", "=", "1", "sse", "fma", "!", "vl", "x"};
    CpuFeatures cpus[] = {0, SSE_SET, AVX2_SET, CPUS[5].expected, SKX_SET};
    unsigned long long seed = 0x9e3779b97f4a7c15ull;
    for (size_t k = 0; k < sizeof cpus / sizeof cpus[0]; k++) {
        for (int trial = 0; trial < 20000 + (int)(sizeof attempts / sizeof attempts[0]); trial++) {
            char spec[96] = "";
            if (trial < (int)(sizeof attempts / sizeof attempts[0])) {
                snprintf(spec, sizeof spec, "%s", attempts[trial]);
            } else {
                int parts = 1 + (int)(seed >> 60);
                for (int p = 0; p < parts; p++) {
                    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                    strncat(spec, pieces[(seed >> 33) % (sizeof pieces / sizeof pieces[0])], sizeof spec - strlen(spec) - 1);
                }
            }
            CpuView v = {.usable = ~0u, .hidden = ~0u};
            Error err = {{0}};
            if (cpu_features_hide(cpus[k], spec, &v, &err) == 0) {
                if (!is_subset(v.usable, cpus[k]) || !is_subset(v.hidden, cpus[k]) || (v.usable & v.hidden) ||
                    (v.usable | v.hidden) != cpus[k])
                    fail_msg("\"%s\" on %#x gave usable %#x hidden %#x", spec, cpus[k], v.usable, v.hidden);
            } else {
                assert_true(strlen(err.msg) > 0);
            }
        }
    }
}

// Detection forced both ways end to end: an AVX-512 CPU gets an AVX-512 type; the same CPU with
// AVX-512 hidden gets none, exactly as a CPU without it.
static void test_detection_forced_both_ways(void **state) {
    (void)state;
    CpuFeatures zen4 = cpu_features_from_cpuid(&CPUS[7].words);
    CpuView as_is = view_of(zen4, NULL), hidden = view_of(zen4, "avx512");
    CpuView zen3 = view_of(cpu_features_from_cpuid(&CPUS[2].words), NULL);
    KernelsChoice c = cpu_kernels_choose(&as_is, NULL, "Haswell");
    assert_non_null(c.force);
    assert_true(core_type_is_avx512(c.force));
    KernelsChoice h = cpu_kernels_choose(&hidden, NULL, "Haswell"), z = cpu_kernels_choose(&zen3, NULL, "Haswell");
    assert_null(h.force);
    assert_null(z.force);
    assert_int_equal(h.why, z.why);
    assert_int_equal(hidden.usable, zen3.usable);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_features_come_from_cpuid_and_the_state_the_os_saves),
        cmocka_unit_test(test_this_machines_cpu_reads_consistently),
        cmocka_unit_test(test_core_type_table),
        cmocka_unit_test(test_no_combination_selects_an_unsupported_core_type),
        cmocka_unit_test(test_exact_choices),
        cmocka_unit_test(test_explanations_name_the_reason),
        cmocka_unit_test(test_hiding_removes_features),
        cmocka_unit_test(test_no_string_adds_a_feature),
        cmocka_unit_test(test_detection_forced_both_ways),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
