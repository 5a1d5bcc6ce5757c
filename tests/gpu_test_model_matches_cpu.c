// The whole model on the CUDA backend against the fp32 CPU backend (its reference): the loss and
// every parameter tensor's gradient of one forward and backward pass, from the same weights and
// tokens, for the plain decoder (pre- and post-norm, tied and untied, with the entropy
// regulariser), SGA and its ablations, and R3SI (injection and L_SD); then a few trainer steps on
// each backend (data, micro-batching, AdamW, the R3SI monitor), whose losses must agree.
// Each case runs in both GEMM precisions: CUDA_GEMM_FP32 checks the kernels tightly,
// CUDA_GEMM_BF16 (what training uses) loosely. Exits 77 (skip) where there is no CUDA device.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <mpi.h>
#include <string.h>
#include "gpu_compare.h"
#include "comm.h"
#include "model.h"
#include "r3si.h"
#include "train.h"
#include "../cuda/comm_nccl.h"

// ---- tolerances ---------------------------------------------------------------------------------
// Loss: relative error. Gradients: scale-relative max error per parameter tensor (gpu_compare.h).
// fp32: every op is fp32 on both sides and differs in summation order and in expf/logf/tanhf
// ulps; through two layers that stays near 1e-5, 1e-4 leaves room for the gate's sigmoid/DCT chain.
// bf16: the GEMM operands lose 16 of 24 mantissa bits (relative 4e-3 each). How much that moves a
// gradient differs from tensor to tensor (sga_e's gradient passes the gate MLP, DCT and blend and
// moved by 2.7e-2 under the emulator, where most tensors move by 1e-3), so each tensor's bound is
// measured, not guessed: the same CPU pass with every weight rounded to bf16 (one of the two
// operands a bf16 GEMM rounds) gives the tensor's sensitivity e_w; the GPU rounds both operands
// of every product, independent errors of about the same size, so its error is expected near
// sqrt(2) e_w to 2 e_w: the bound is BF16_GRAD_FACTOR e_w, and never below BF16_GRAD_FLOOR.
// Trainer steps: the loss of each step relative; the parameters drift apart through AdamW
// (whose update normalises tiny gradient differences), so the bound grows with the steps.
#define BF16_GRAD_FACTOR 6.0
#define BF16_GRAD_FLOOR 2e-3
// train.activations = "bf16" in the fp32 GEMM precision: both sides round the stored GEMM inputs
// to bf16 the same way, but the fp32 values they round differ by an ulp here and there (expf,
// summation order), and an element that sits at a rounding boundary goes to different bf16
// neighbours, a whole bf16 ulp (up to 2^-7 relative) apart. So the four weight gradients
// dW = dout^T x whose x may be stored get the bf16 bound BF16_GRAD_FLOOR (1.1e-4 measured under
// the emulator, post-norm fcproj_w); every other tensor keeps the fp32 one.
static int reads_stored_input(int id) {
    return id == PARAM_QKV_W || id == PARAM_ATTPROJ_W || id == PARAM_FC_W || id == PARAM_FCPROJ_W;
}
static const struct { double loss, grad, steps; } TOL[2] = {
    [CUDA_GEMM_FP32] = {1e-5, 1e-4, 1e-4},
    [CUDA_GEMM_BF16] = {1e-2, 0 /* per tensor, see above */, 1e-3},
};

enum { B = 2 };

// ---- model variants -------------------------------------------------------------------------------
typedef struct {
    const char *name;
    void (*configure)(Config *c);
    double entropy_reg_weight;   // a trainer switch of the model, not a config key
} Variant;

static void base_config(Config *c) {
    config_defaults(c);
    // Odd sizes: no dimension is a multiple of a warp or a GEMM tile.
    c->n_layer = 2; c->n_head = 3; c->d_model = 36; c->seq_len = 19; c->vocab_size = 41; c->mlp_ratio = 2;
    c->init_std = 0.1;
}
static void plain(Config *c) { (void)c; }
static void post_untied(Config *c) { c->norm = NORM_POST; c->tie_embeddings = 0; }
static void sga(Config *c) { snprintf(c->attention_kind, sizeof c->attention_kind, "sga"); c->sga_alpha_init = 0.4; }
static void sga_no_spectral(Config *c) { sga(c); c->sga_spectral = 0; }
static void sga_fixed_filter(Config *c) { sga(c); c->sga_fixed_filter = 1; }
static void sga_no_blend(Config *c) { sga(c); c->sga_blend = 0; }
static void r3si(Config *c) {
    c->n_layer = 3; c->r3si_enabled = 1; c->r3si_n_layers = 2; c->r3si_layers[0] = 1; c->r3si_layers[1] = 2;
    c->r3si_k = 5; c->r3si_ds = 7; c->r3si_inject = 1; c->r3si_lsd_lambda = 0.3;
}
// train.recompute: the model rebuilds what it did not keep through the same backend ops, so the
// GPU pass with recomputation matches the CPU's (on the CPU every mode is bitwise "none":
// tests/test_recompute_gradients.c).
static void sga_recompute_attention(Config *c) { sga(c); c->recompute = RECOMPUTE_ATTENTION; }
static void post_recompute_block(Config *c) { post_untied(c); c->recompute = RECOMPUTE_BLOCK; }
static void r3si_recompute_block(Config *c) { r3si(c); c->recompute = RECOMPUTE_BLOCK; }
// attention.fused: SDPA's fused form on both sides (the CUDA kernels against the CPU twin), and
// under recomputation, where the rebuild recomputes lse and y into the slot.
static void fused(Config *c) { c->attention_fused = 1; }
static void fused_recompute_attention(Config *c) { fused(c); c->recompute = RECOMPUTE_ATTENTION; }
// train.activations = "bf16" on both sides: the CPU twin rounds the kept GEMM inputs as the GPU
// does, so the fp32 GEMM precision still compares tightly.
static void bf16_activations(Config *c) { c->activations = ACTIVATIONS_BF16; }
static void post_recompute_attention(Config *c) { post_untied(c); c->recompute = RECOMPUTE_ATTENTION; }
static void post_recompute_attention_bf16_activations(Config *c) { post_recompute_attention(c); bf16_activations(c); }
static void sga_bf16_activations(Config *c) { sga(c); bf16_activations(c); }

static const Variant VARIANTS[] = {
    {"plain pre-norm tied", plain, 0},
    {"plain post-norm untied", post_untied, 0},
    {"plain + entropy regulariser", plain, 0.05},
    {"sga", sga, 0},
    {"sga.spectral=false", sga_no_spectral, 0},
    {"sga.fixed_filter=true", sga_fixed_filter, 0},
    {"sga.blend=false", sga_no_blend, 0},
    {"r3si (injection + L_SD)", r3si, 0},
    {"sga, recompute=attention", sga_recompute_attention, 0},
    {"post-norm, recompute=block", post_recompute_block, 0},
    {"r3si, recompute=block", r3si_recompute_block, 0},
    {"sdpa attention.fused=true", fused, 0},
    {"sdpa attention.fused=true, recompute=attention", fused_recompute_attention, 0},
    {"plain, activations=bf16", bf16_activations, 0},
    {"post-norm, recompute=attention, activations=bf16", post_recompute_attention_bf16_activations, 0},
    {"sga, activations=bf16", sga_bf16_activations, 0},
};
enum { N_VARIANTS = sizeof VARIANTS / sizeof VARIANTS[0] };

typedef struct {
    Config cfg;
    Model m;
    Activations a;
} Net;

// An orthonormal (D,k) basis (modified Gram-Schmidt on normal columns), row-major.
static double *orthonormal(int D, int k, uint64_t seed) {
    double *V = malloc(sizeof(double) * D * k);
    for (int i = 0; i < D * k; i++) V[i] = rng_normal(seed, 3, (uint64_t)i);
    for (int j = 0; j < k; j++) {
        for (int p = 0; p < j; p++) {
            double dot = 0;
            for (int i = 0; i < D; i++) dot += V[i * k + j] * V[i * k + p];
            for (int i = 0; i < D; i++) V[i * k + j] -= dot * V[i * k + p];
        }
        double norm = 0;
        for (int i = 0; i < D; i++) norm += V[i * k + j] * V[i * k + j];
        for (int i = 0; i < D; i++) V[i * k + j] /= sqrt(norm);
    }
    return V;
}

// Builds the variant on `be` with the given weights (NULL: initialise and perturb them, so that
// LayerNorm gains and biases are not at their trivial values) and the same tokens on every backend.
static void net_build(Net *n, const Backend *be, const Variant *v, const float *weights) {
    base_config(&n->cfg);
    v->configure(&n->cfg);
    ModelShape s = model_shape_from_config(&n->cfg);
    model_init(&n->m, be, s, 0, s.n_layer, 1, 1, 1);
    if (weights) {
        be->upload(n->m.params_mem, weights, n->m.num_params);
    } else {
        model_init_weights(&n->m, 42);
        float *w = malloc(n->m.num_params * sizeof(float));
        be->download(w, n->m.params_mem, n->m.num_params);
        for (size_t i = 0; i < n->m.num_params; i++) w[i] += (float)(0.05 * rng_normal(6, 0, i));
        be->upload(n->m.params_mem, w, n->m.num_params);
        free(w);
    }
    n->m.reg.entropy_weight = v->entropy_reg_weight;
    R3si *r = model_hook_state(&n->m, &BLOCK_HOOK_R3SI);
    if (r) {
        // The buffers as a monitor step would leave them: orthonormal V, alpha > 0, tau above any
        // participation ratio of a 36-wide stream, so that the hinge is active.
        double *V = orthonormal(r->D, r->k, 11);
        for (int i = 0; i < r->n_ckpt; i++) {
            be->upload_f64(r->V[i], V, (size_t)r->D * r->k);
            r->alpha[i] = 0.3 + 0.2 * i;
        }
        free(V);
        r->tau = r->D;
    }
    activations_init(&n->a, &n->m, B);
    // A training pass of one micro-batch at a step without monitoring: L_SD's scale is lambda.
    n->a.pass.step = (StepContext){.training = 1, .step = 1, .loss_scale = 1, .attn_temperature = 1, .micro_batches = 1};
    int T = s.seq_len, Vv = s.vocab_size;
    int32_t tokens[B * 19], targets[B * 19];
    for (int i = 0; i < B * T; i++) {
        tokens[i] = (int32_t)(rng_hash3(5, 1, (uint64_t)i) % (uint64_t)Vv);
        targets[i] = i % 5 == 2 ? -1 : (int32_t)(rng_hash3(5, 2, (uint64_t)i) % (uint64_t)Vv);   // some unscored
    }
    be->upload_i32(n->a.tokens, tokens, (size_t)B * T);
    be->upload_i32(n->a.targets, targets, (size_t)B * T);
}

static void net_free(Net *n) {
    activations_free(&n->a, &n->m);
    model_free(&n->m);
}

// The pass the trainer runs on one micro-batch; returns the objective of the micro-batch.
static double forward_backward(Net *n, double dloss) {
    model_forward(&n->m, &n->a);
    double loss = model_loss_sum(&n->m, &n->a) * dloss;
    for (int i = 0; i < NUM_AUX; i++) loss += model_aux_weight(&n->m, (AuxTerm)i, &n->a.pass.step) * n->a.aux[i];
    model_backward(&n->m, &n->a, dloss, NULL, NULL);
    n->m.be->synchronize();
    return loss;
}

// Scale-relative max error of one parameter tensor's gradient, over all its layer slices.
static double grad_error(const Model *m, const ParamInfo *p, int id, const float *g, const float *c) {
    double max_diff = 0, max_ref = 0;
    int per_layer = p->role == ROLE_BLOCK;
    int l0 = per_layer ? m->layer_begin : 0, l1 = per_layer ? m->layer_end : 1;
    for (int l = l0; l < l1; l++) {
        if (per_layer && !param_in_layer(p, l)) continue;
        size_t off = model_param_offset(m, id, l), n = per_layer ? p->slice_numel : p->numel;
        for (size_t i = off; i < off + n; i++) {
            double d = fabs((double)g[i] - (double)c[i]);
            if (!(d <= max_diff)) max_diff = d;
            if (fabs((double)c[i]) > max_ref) max_ref = fabs((double)c[i]);
        }
    }
    return max_diff / (max_ref + 1e-12);
}

// x rounded to the nearest bf16 (ties to even), as a float.
static float round_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7f800000u) != 0x7f800000u) u += 0x7fffu + ((u >> 16) & 1u);   // Inf and NaN stay
    u &= 0xffff0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

typedef struct {
    const Variant *variant;
    CudaGemmPrecision precision;
    // What the case built, for its teardown: a failed assertion leaves the test function at once,
    // and the next case must find the backend released (backend_cuda_create refuses a second one).
    Net nc, ng, nb;          // the CPU reference, the GPU, the CPU with bf16-rounded weights
    int built;               // 1: nc, 2: nc and ng, 3: all three
} ModelCase;

static void test_model_case(void **state) {
    ModelCase *mc = *state;
    const Backend *gpu = gpu_backend_or_skip(mc->precision), *cpu = backend_cpu_f32();
    const char *prec = mc->precision == CUDA_GEMM_FP32 ? "fp32" : "bf16";
    net_build(&mc->nc, cpu, mc->variant, NULL);
    mc->built = 1;
    float *weights = malloc(mc->nc.m.num_params * sizeof(float));
    cpu->download(weights, mc->nc.m.params_mem, mc->nc.m.num_params);
    net_build(&mc->ng, gpu, mc->variant, weights);
    mc->built = 2;
    free(weights);
    assert_int_equal(mc->ng.m.num_params, mc->nc.m.num_params);
    float *bf16_grads = NULL;   // bf16: the gradients of the CPU pass with bf16-rounded weights
    if (mc->precision == CUDA_GEMM_BF16) {
        size_t np = mc->nc.m.num_params;
        float *w = malloc(np * sizeof(float));
        cpu->download(w, mc->nc.m.params_mem, np);
        for (size_t i = 0; i < np; i++) w[i] = round_bf16(w[i]);
        net_build(&mc->nb, cpu, mc->variant, w);
        mc->built = 3;
        free(w);
        forward_backward(&mc->nb, 1.0 / 31);
        bf16_grads = malloc(np * sizeof(float));
        cpu->download(bf16_grads, mc->nb.m.grads_mem, np);
    }

    double dloss = 1.0 / 31;
    double lc = forward_backward(&mc->nc, dloss), lg = forward_backward(&mc->ng, dloss);
    double loss_err = fabs(lg - lc) / fabs(lc);
    printf("# %s %-28s loss cpu %.7f gpu %.7f rel err %.2e\n", prec, mc->variant->name, lc, lg, loss_err);
    assert_true(isfinite(lg));
    assert_true(loss_err <= TOL[mc->precision].loss);
    if (model_hook_state(&mc->nc.m, &BLOCK_HOOK_R3SI)) {
        double e = fabs(mc->ng.a.aux[AUX_LSD] - mc->nc.a.aux[AUX_LSD]) / fabs(mc->nc.a.aux[AUX_LSD]);
        printf("# %s %-28s L_SD sum rel err %.2e\n", prec, "", e);
        assert_true(mc->nc.a.aux[AUX_LSD] > 0 && e <= TOL[mc->precision].loss);
    }

    size_t n = mc->nc.m.num_params;
    float *gc = malloc(n * sizeof(float)), *gg = malloc(n * sizeof(float));
    cpu->download(gc, mc->nc.m.grads_mem, n);
    gpu->download(gg, mc->ng.m.grads_mem, n);
    double worst = 0;   // the largest error relative to its tensor's bound
    const char *worst_name = "";
    for (int id = 0; id < mc->nc.m.n_params; id++) {
        const ParamInfo *p = &mc->nc.m.params[id];
        if (!p->present) continue;
        double e = grad_error(&mc->nc.m, p, id, gg, gc), bound = TOL[mc->precision].grad;
        if (mc->nc.a.bf16 && reads_stored_input(id) && bound < BF16_GRAD_FLOOR) bound = BF16_GRAD_FLOOR;
        if (bf16_grads) {
            double e_w = grad_error(&mc->nc.m, p, id, bf16_grads, gc);
            bound = BF16_GRAD_FACTOR * e_w > BF16_GRAD_FLOOR ? BF16_GRAD_FACTOR * e_w : BF16_GRAD_FLOOR;
            printf("# %s %-28s grad %-18s err %.2e (bf16-weights err %.2e, bound %.2e)\n", prec, mc->variant->name, p->name, e, e_w,
                   bound);
        } else {
            printf("# %s %-28s grad %-18s err %.2e (bound %.0e)\n", prec, mc->variant->name, p->name, e, bound);
        }
        if (!(e / bound <= worst)) { worst = e / bound; worst_name = p->name; }
    }
    printf("# %s %-28s worst gradient %s at %.2f of its bound\n", prec, mc->variant->name, worst_name, worst);
    assert_true(worst <= 1.0);
    free(gc); free(gg); free(bf16_grads);
}

// Runs after every model case, passed or failed.
static int model_case_teardown(void **state) {
    ModelCase *mc = *state;
    if (mc->built >= 3) net_free(&mc->nb);
    if (mc->built >= 2) net_free(&mc->ng);
    if (mc->built >= 1) net_free(&mc->nc);
    mc->built = 0;
    backend_cuda_destroy();
    return 0;
}

// ---- bf16 activations under bf16 GEMMs -----------------------------------------------------------
// With CUDA_GEMM_BF16 cuBLAS rounds every fp32 operand to bf16 (nearest even), which is what
// pack_bf16 does, so storing the GEMM-only activations in bf16 changes nothing: the GPU pass with
// train.activations = "bf16" is bit for bit the one with "fp32" (losses and every gradient).
static const Variant *const BF16_ACT_PAIRS[][2] = {
    {&VARIANTS[0], &VARIANTS[N_VARIANTS - 3]},    // plain pre-norm
    {NULL, &VARIANTS[N_VARIANTS - 2]},            // post-norm, recompute attention (fp32 twin below)
    {&VARIANTS[3], &VARIANTS[N_VARIANTS - 1]},    // sga
};
static const Variant POST_RECOMPUTE_ATTENTION = {"post-norm, recompute=attention", post_recompute_attention, 0};

typedef struct {
    Net n[2];
    int built;   // nets built (for the teardown)
} Bf16ActCase;

static void test_bf16_activations_exact_under_bf16_gemm(void **state) {
    Bf16ActCase *bc = *state;
    const Backend *gpu = gpu_backend_or_skip(CUDA_GEMM_BF16);
    for (size_t pi = 0; pi < sizeof BF16_ACT_PAIRS / sizeof BF16_ACT_PAIRS[0]; pi++) {
        const Variant *v[2] = {BF16_ACT_PAIRS[pi][0] ? BF16_ACT_PAIRS[pi][0] : &POST_RECOMPUTE_ATTENTION, BF16_ACT_PAIRS[pi][1]};
        double loss[2];
        float *grads[2], *losses[2];
        for (int k = 0; k < 2; k++) {
            net_build(&bc->n[k], gpu, v[k], NULL);   // the same weights: initialised from the same seed
            bc->built = k + 1;
        }
        assert_int_equal(bc->n[1].a.bf16, 1);
        size_t np = bc->n[0].m.num_params, nt = (size_t)B * bc->n[0].a.T;
        for (int k = 0; k < 2; k++) {
            loss[k] = forward_backward(&bc->n[k], 1.0 / 31);
            grads[k] = malloc(np * sizeof(float));
            losses[k] = malloc(nt * sizeof(float));
            gpu->download(grads[k], bc->n[k].m.grads_mem, np);
            gpu->download(losses[k], bc->n[k].a.losses, nt);
        }
        size_t differ = 0;
        for (size_t i = 0; i < np; i++) differ += memcmp(&grads[0][i], &grads[1][i], sizeof(float)) != 0;
        int same_losses = !memcmp(losses[0], losses[1], nt * sizeof(float));
        printf("# bf16 %-48s activations bf16 vs fp32: loss %.9g vs %.9g, %zu of %zu gradients differ, token losses %s\n",
               v[1]->name, loss[1], loss[0], differ, np, same_losses ? "equal" : "DIFFER");
        for (int k = 0; k < 2; k++) { free(grads[k]); free(losses[k]); }
        for (int k = 1; k >= 0; k--) net_free(&bc->n[k]);
        bc->built = 0;
        assert_true(loss[0] == loss[1] && same_losses);
        assert_int_equal(differ, 0);
    }
}

static int bf16_act_case_teardown(void **state) {
    Bf16ActCase *bc = *state;
    for (int k = bc->built - 1; k >= 0; k--) net_free(&bc->n[k]);
    bc->built = 0;
    backend_cuda_destroy();
    return 0;
}

// ---- trainer steps ----------------------------------------------------------------------------------
typedef struct {
    const char *name;
    const char *sets[8];
    CudaGemmPrecision precision;
    Comm *cpu_comm, *gpu_comm;   // for the teardown
} StepsCase;

enum { STEPS = 5 };

static void run_steps(const Backend *be, Comm *comm, const char *const *sets, double *loss) {
    static Config cfg;
    const char *all[16] = {"model.n_layer=2", "model.seq_len=24", "train.batch_size=16", "train.micro_batch_size=8",
                           "train.steps=20", "train.warmup_steps=2", "eval.batches=1"};
    int n = 7;
    for (int i = 0; i < 8 && sets[i]; i++) all[n++] = sets[i];
    Error err = {{0}};
    if (config_load("configs/tiny.cfg", all, n, &cfg, &err)) fail_msg("%s", err.msg);
    Trainer t;
    if (trainer_init(&t, &cfg, be, comm, &err)) fail_msg("%s", err.msg);
    for (int s = 0; s < STEPS; s++) {
        StepResult r;
        if (trainer_step(&t, s, &r, &err)) fail_msg("%s", err.msg);
        assert_false(r.skipped);
        loss[s] = r.loss;
    }
    trainer_free(&t);
}

static void test_steps_case(void **state) {
    StepsCase *sc = *state;
    const Backend *gpu = gpu_backend_or_skip(sc->precision);
    Comm *cpu_comm = sc->cpu_comm = comm_mpi_create(1, sizeof(float));
    Comm *gpu_comm = sc->gpu_comm = comm_nccl_create(1, gpu->elem_size);
    double lc[STEPS], lg[STEPS], worst = 0;
    run_steps(backend_cpu_f32(), cpu_comm, sc->sets, lc);
    run_steps(gpu, gpu_comm, sc->sets, lg);
    const char *prec = sc->precision == CUDA_GEMM_FP32 ? "fp32" : "bf16";
    for (int s = 0; s < STEPS; s++) {
        double e = fabs(lg[s] - lc[s]) / fabs(lc[s]);
        printf("# %s %-10s step %d loss cpu %.7f gpu %.7f rel err %.2e\n", prec, sc->name, s, lc[s], lg[s], e);
        if (!(e <= worst)) worst = e;
    }
    assert_true(worst <= TOL[sc->precision].steps);
}

// Runs after every steps case, passed or failed: the transports, then the backend.
static int steps_case_teardown(void **state) {
    StepsCase *sc = *state;
    if (sc->gpu_comm) sc->gpu_comm->free(sc->gpu_comm);
    if (sc->cpu_comm) sc->cpu_comm->free(sc->cpu_comm);
    sc->gpu_comm = sc->cpu_comm = NULL;
    backend_cuda_destroy();
    return 0;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    enum { N_STEPS_CASES = 7 };
    static ModelCase model_cases[2 * N_VARIANTS];
    static StepsCase steps_cases[N_STEPS_CASES] = {
        {.name = "plain", .sets = {NULL}, .precision = CUDA_GEMM_FP32},
        {.name = "sga", .sets = {"attention.kind=sga"}, .precision = CUDA_GEMM_FP32},
        // A monitor every other step: covariance downloads, the host eigen-solve, V uploads.
        {.name = "r3si", .sets = {"r3si.enabled=true", "r3si.layers=[0, 1]", "r3si.k=8", "r3si.monitor_every=2"}, .precision = CUDA_GEMM_FP32},
        {.name = "plain", .sets = {NULL}, .precision = CUDA_GEMM_BF16},
        {.name = "sga", .sets = {"attention.kind=sga"}, .precision = CUDA_GEMM_BF16},
        {.name = "r3si", .sets = {"r3si.enabled=true", "r3si.layers=[0, 1]", "r3si.k=8", "r3si.monitor_every=2"}, .precision = CUDA_GEMM_BF16},
        {.name = "plain, activations=bf16", .sets = {"train.activations=bf16"}, .precision = CUDA_GEMM_BF16},
    };
    static Bf16ActCase bf16_act_case;
    struct CMUnitTest tests[2 * N_VARIANTS + N_STEPS_CASES + 1];
    static char names[2 * N_VARIANTS + N_STEPS_CASES][96];
    int n = 0;
    for (int p = 0; p < 2; p++)
        for (int v = 0; v < N_VARIANTS; v++) {
            ModelCase *mc = &model_cases[p * N_VARIANTS + v];
            mc->variant = &VARIANTS[v];
            mc->precision = p == 0 ? CUDA_GEMM_FP32 : CUDA_GEMM_BF16;
            snprintf(names[n], sizeof names[n], "model %s: %s", p == 0 ? "fp32" : "bf16", VARIANTS[v].name);
            tests[n] = (struct CMUnitTest){names[n], test_model_case, NULL, model_case_teardown, mc};
            n++;
        }
    for (int i = 0; i < N_STEPS_CASES; i++) {
        snprintf(names[n], sizeof names[n], "trainer steps %s: %s", steps_cases[i].precision == CUDA_GEMM_FP32 ? "fp32" : "bf16",
                 steps_cases[i].name);
        tests[n] = (struct CMUnitTest){names[n], test_steps_case, NULL, steps_case_teardown, &steps_cases[i]};
        n++;
    }
    tests[n++] = (struct CMUnitTest){"bf16 GEMMs: activations=bf16 is bitwise activations=fp32", test_bf16_activations_exact_under_bf16_gemm,
                                     NULL, bf16_act_case_teardown, &bf16_act_case};
    int failed = _cmocka_run_group_tests("gpu_test_model_matches_cpu", tests, (size_t)n, NULL, NULL);
    MPI_Finalize();
    return failed;
}
