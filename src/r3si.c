// r3si.c: the R3SI hook as sequences of backend ops, and the monitor on the host.
#include "r3si.h"
#include <math.h>
#include <string.h>
#include "common.h"
#include "r3si_math.h"
#include "rng_streams.h"
#include "stream_stats.h"

int r3si_index(const R3si *r, int layer) {
    for (int i = 0; i < r->n_ckpt; i++) if (r->layers[i] == layer) return i;
    return -1;
}

int r3si_monitors_at(const R3si *r, long step) { return step % r->monitor_every == 0; }

// L_SD is a mean over the micro-batches of the global batch, scaled with the objective.
static double lsd_scale(const R3si *r, const StepContext *ctx) {
    return ctx->training ? ctx->loss_scale * r->lsd_lambda / (double)ctx->micro_batches : 0;
}

double r3si_lsd_weight(const R3si *r, const StepContext *ctx) { return lsd_scale(r, ctx) / ctx->loss_scale; }

static int r3si_enabled(const Config *cfg) { return cfg->r3si_enabled; }

// W_s (d_s, C) exists at the checkpoint blocks only, and only when injecting.
static int r3si_declare_params(const ModelShape *s, ParamSpec *out) {
    const Config *cfg = s->cfg;
    if (!cfg->r3si_inject) return 0;
    out[0] = (ParamSpec){"blocks.r3si_ws", 2, {cfg->r3si_ds, s->d_model}, INIT_NORMAL, s->init_std, 1, PARAM_STREAM_R3SI_WS,
                         cfg->r3si_n_layers, {0}};
    memcpy(out[0].layers, cfg->r3si_layers, sizeof(int) * (size_t)cfg->r3si_n_layers);
    return 1;
}

static void *r3si_create(const Backend *be, const ModelShape *s, int layer_begin, int layer_end) {
    const Config *cfg = s->cfg;
    int D = s->d_model;
    R3si *r = xcalloc(1, sizeof *r);
    r->n_ckpt = cfg->r3si_n_layers;
    memcpy(r->layers, cfg->r3si_layers, sizeof(int) * (size_t)r->n_ckpt);
    r->k = cfg->r3si_k;
    r->ds = cfg->r3si_ds;
    r->D = D;
    r->NH = s->n_head;
    r->head_size = s->head_size;
    r->monitor_every = cfg->r3si_monitor_every;
    r->adaptive = cfg->r3si_adaptive;
    r->inject = cfg->r3si_inject;
    r->center = cfg->r3si_center;
    r->lsd_lambda = cfg->r3si_lsd_lambda;
    r->tau0 = cfg->r3si_tau_init_frac * D;
    r->tau = r->tau0;
    r->seed = cfg->seed;
    // alpha_c = 0 and V_c = 0 before the first monitor step.
    for (int i = 0; i < r->n_ckpt; i++) {
        int layer = r->layers[i];
        if (layer < layer_begin || layer >= layer_end) continue;
        r->V[i] = be->alloc((size_t)D * r->k);
        r->gram[i] = be->alloc((size_t)D * D);
        r->colsum[i] = be->alloc((size_t)D);
    }
    return r;
}

static void r3si_destroy(void *state, const Backend *be) {
    R3si *r = state;
    for (int i = 0; i < r->n_ckpt; i++) {
        if (r->V[i]) be->free(r->V[i]);
        if (r->gram[i]) be->free(r->gram[i]);
        if (r->colsum[i]) be->free(r->colsum[i]);
    }
    free(r);
}

// What one micro-batch slot keeps: per local layer the injected input and z (when injecting),
// and scratch.
typedef struct {
    void *in;              // (Lc,B,T,C) block input after the injection
    void *z;               // (Lc,B,T,d_s) z = H W_s^T
    void *u, *g, *hc;      // (B,T,C)
    void *p;               // (B,T,k)
    void *dz;              // (B,T,d_s)
    void *cov;             // (C,C) this micro-batch's covariance
} R3siSlot;

static void *r3si_slot_create(void *state, const Backend *be, const ModelShape *s, int n_layers, int B, size_t *elements) {
    R3si *r = state;
    R3siSlot *slot = xcalloc(1, sizeof *slot);
    size_t N = (size_t)B * s->seq_len, C = (size_t)s->d_model, Lc = (size_t)n_layers, ds = (size_t)r->ds, k = (size_t)r->k;
#define ALLOC(field, n) do { slot->field = be->alloc(n); *elements += (n); } while (0)
    if (r->inject) { ALLOC(in, Lc * N * C); ALLOC(z, Lc * N * ds); }
    ALLOC(u, N * C); ALLOC(g, N * C); ALLOC(hc, N * C); ALLOC(p, N * k); ALLOC(dz, N * ds);
    ALLOC(cov, C * C);
#undef ALLOC
    return slot;
}

static void r3si_slot_free(void *state, const Backend *be, void *slot_) {
    (void)state;
    R3siSlot *slot = slot_;
    void *all[] = {slot->in, slot->z, slot->u, slot->g, slot->hc, slot->p, slot->dz, slot->cov};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) if (all[i]) be->free(all[i]);
    free(slot);
}

static const void *r3si_block_input(void *state, void *slot_, const LayerCall *c, const void *x) {
    R3si *r = state;
    R3siSlot *slot = slot_;
    int ck = r3si_index(r, c->layer);
    if (ck < 0) return x;
    const Backend *be = c->be;
    const StepContext *ctx = &c->pass->step;
    int N = c->B * c->T, D = r->D, k = r->k, ds = r->ds;
    int monitor = ctx->training && r3si_monitors_at(r, ctx->step);
    if (monitor) {
        be->gemm(1, 0, D, D, N, 1.0, x, D, x, D, 1.0, r->gram[ck], D);   // gram (+=) H^T H
        if (r->center) be->column_sums(r->colsum[ck], x, N, D);
    }
    double scale = lsd_scale(r, ctx);
    if (scale > 0) {
        StreamMoments mo = stream_covariance(be, x, N, D, slot->cov);
        double pr = participation_ratio_of(mo);
        c->aux[AUX_LSD] += pr < r->tau ? r->tau - pr : 0;
    }
    if (!r->inject) return x;
    void *xin = be_offset(be, slot->in, (size_t)c->li * N * D);
    be->copy(xin, x, (size_t)N * D);
    if (r->alpha[ck] <= 0) return xin;
    void *z = be_offset(be, slot->z, (size_t)c->li * N * ds);
    const void *Ws = c->param[0];   // (ds, D)
    be->gemm(0, 1, N, ds, D, 1.0, x, D, Ws, D, 0, z, ds);           // z = H W_s^T (N,ds)
    be->gemm(0, 0, N, D, ds, 1.0, z, ds, Ws, D, 0, slot->u, D);     // u = z W_s (N,D)
    be->gemm(0, 0, N, k, D, 1.0, slot->u, D, r->V[ck], k, 0, slot->p, k);      // u V (N,k)
    be->gemm(0, 1, N, D, k, -1.0, slot->p, k, r->V[ck], k, 1.0, slot->u, D);   // u - (u V) V^T
    be->axpy(xin, r->alpha[ck], slot->u, (size_t)N * D);                        // H + delta
    if (monitor && c->pass->micro_batch == 0) {   // ||delta|| / ||H|| on the first micro-batch
        r->injected_sq[ck] = r->alpha[ck] * r->alpha[ck] * be->sum_squares(slot->u, (size_t)N * D);
        r->input_sq[ck] = be->sum_squares(x, (size_t)N * D);
    }
    return xin;
}

static void r3si_block_input_backward(void *state, void *slot_, const LayerCall *c, const void *x, void *dx) {
    R3si *r = state;
    R3siSlot *slot = slot_;
    int ck = r3si_index(r, c->layer);
    if (ck < 0) return;
    const Backend *be = c->be;
    int N = c->B * c->T, D = r->D, k = r->k, ds = r->ds;
    if (r->inject && r->alpha[ck] > 0) {
        // H' = H + alpha (z W_s) P, z = H W_s^T, P = I - V V^T; g = dL/dH' in dx.
        const void *z = be_offset(be, slot->z, (size_t)c->li * N * ds);
        const void *Ws = c->param[0];
        void *dWs = c->grad[0];
        be->gemm(0, 0, N, k, D, 1.0, dx, D, r->V[ck], k, 0, slot->p, k);          // g V
        be->copy(slot->g, dx, (size_t)N * D);
        be->gemm(0, 1, N, D, k, -1.0, slot->p, k, r->V[ck], k, 1.0, slot->g, D);   // g_p = g P
        be->gemm(0, 1, N, ds, D, r->alpha[ck], slot->g, D, Ws, D, 0, slot->dz, ds);  // dz = alpha g_p W_s^T
        be->gemm(1, 0, ds, D, N, r->alpha[ck], z, ds, slot->g, D, 1.0, dWs, D);      // dW_s += alpha z^T g_p
        be->gemm(1, 0, ds, D, N, 1.0, slot->dz, ds, x, D, 1.0, dWs, D);               // dW_s += dz^T H
        be->gemm(0, 0, N, D, ds, 1.0, slot->dz, ds, Ws, D, 1.0, dx, D);               // dH = g + dz W_s
    }
    double scale = lsd_scale(r, &c->pass->step);
    if (scale > 0) {
        StreamMoments mo = stream_covariance(be, x, N, D, slot->cov);
        double pr = participation_ratio_of(mo);
        if (pr < r->tau && mo.frob_sq > 0) {
            // L = scale (tau - PR): dL/dH = -scale (4 a / (N b)) (H - (a / b) H C)
            double g = -scale * 4 * mo.trace / (N * mo.frob_sq);
            be->gemm(0, 0, N, D, D, 1.0, x, D, slot->cov, D, 0, slot->hc, D);   // H C
            be->axpy(dx, g, x, (size_t)N * D);
            be->axpy(dx, -g * mo.trace / mo.frob_sq, slot->hc, (size_t)N * D);
        }
    }
}

void r3si_monitor_update(R3si *r, const Backend *be, Comm *comm, long step, double tokens, int grads_reduced,
                         HeadGradientsFn head_gradients, const void *model) {
    int D = r->D, NH = r->NH;
    // Per checkpoint layer: rank, and the variance of head-gradient cosines; every rank adds what
    // its stage owns (replica 0 only, so that each layer counts once), then all reduce.
    double sums[3 * CFG_MAX_LIST + 2];
    memset(sums, 0, sizeof sums);
    double *C = xmalloc(sizeof(double) * D * D), *mu = xmalloc(sizeof(double) * D);
    double *V = xmalloc(sizeof(double) * D * r->k);
    size_t n_head = (size_t)4 * r->head_size * D;
    double *G = xmalloc(sizeof(double) * NH * n_head);
    for (int c = 0; c < r->n_ckpt; c++) {
        if (!r->gram[c]) continue;
        // The covariance of the global batch: sum over micro-batches here, over replicas below.
        be->download_f64(C, r->gram[c], (size_t)D * D);
        be->download_f64(mu, r->colsum[c], (size_t)D);
        comm->dp_sum_doubles(comm, C, D * D);
        comm->dp_sum_doubles(comm, mu, D);
        for (size_t i = 0; i < (size_t)D * D; i++) C[i] /= tokens;
        if (r->center)
            for (int i = 0; i < D; i++)
                for (int j = 0; j < D; j++) C[(size_t)i * D + j] -= (mu[i] / tokens) * (mu[j] / tokens);
        double rank = participation_ratio(C, D);
        // Seeded by the step: every replica draws the same test matrix; replica 0's V is then
        // broadcast so that all hold the very same bits.
        top_eigenvectors(C, D, r->k, 8, 2, r->seed, RNG_STREAM_R3SI_EIGENVECTORS + (uint64_t)step * 64 + (uint64_t)c, V, NULL);
        float *Vf = xmalloc(sizeof(float) * D * r->k);
        for (size_t i = 0; i < (size_t)D * r->k; i++) Vf[i] = (float)V[i];
        be->upload(r->V[c], Vf, (size_t)D * r->k);
        free(Vf);
        comm->dp_broadcast(comm, r->V[c], (size_t)D * r->k);
        head_gradients(model, r->layers[c], G);
        if (!grads_reduced) comm->dp_sum_doubles(comm, G, (int)(NH * n_head));
        double diversity = head_gradient_diversity(G, NH, n_head);
        if (comm->dp_index == 0) {
            sums[c] = rank;
            sums[CFG_MAX_LIST + c] = diversity;
            sums[2 * CFG_MAX_LIST + c] = r->input_sq[c] > 0 ? sqrt(r->injected_sq[c] / r->input_sq[c]) : 0;
        }
        be->zero(r->gram[c], (size_t)D * D);
        be->zero(r->colsum[c], (size_t)D);
    }
    comm->world_sum(comm, sums, 3 * CFG_MAX_LIST);
    double rho = 0;
    for (int c = 0; c < r->n_ckpt; c++) {
        r->rank[c] = sums[c];
        r->inject_ratio[c] = sums[2 * CFG_MAX_LIST + c];
        rho += sums[CFG_MAX_LIST + c] / r->n_ckpt;
    }
    r->rho = rho;
    if (r->monitors == 0) r->rho_ref = rho;
    r->tau = r->adaptive ? adaptive_tau(r->tau0, r->rho_ref, rho, D) : r->tau0;
    for (int c = 0; c < r->n_ckpt; c++) r->alpha[c] = r->rank[c] < r->tau ? (r->tau - r->rank[c]) / r->tau : 0;
    r->monitors++;
    free(C); free(mu); free(V); free(G);
}

static int r3si_after_gradients(void *state, const HookStepEnv *env) {
    R3si *r = state;
    if (!env->ctx->training || !r3si_monitors_at(r, env->ctx->step)) return 0;
    r3si_monitor_update(r, env->be, env->comm, env->ctx->step, env->tokens, env->grads_reduced, env->head_gradients, env->model);
    return 1;
}

static double r3si_aux_weight(const void *state, AuxTerm term, const StepContext *ctx) {
    return term == AUX_LSD ? r3si_lsd_weight(state, ctx) : 0;
}

const BlockHook BLOCK_HOOK_R3SI = {
    .name = "r3si",
    .enabled = r3si_enabled,
    .declare_params = r3si_declare_params,
    .create = r3si_create,
    .destroy = r3si_destroy,
    .slot_create = r3si_slot_create,
    .slot_free = r3si_slot_free,
    .block_input = r3si_block_input,
    .block_input_backward = r3si_block_input_backward,
    .after_gradients = r3si_after_gradients,
    .aux_weight = r3si_aux_weight,
};
