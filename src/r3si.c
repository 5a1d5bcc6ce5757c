// r3si.c: the R3SI hooks as sequences of backend ops, and the monitor on the host.
#include "r3si.h"
#include <math.h>
#include <string.h>
#include "r3si_math.h"

int r3si_index(const R3si *r, int layer) {
    for (int i = 0; i < r->n_ckpt; i++) if (r->layers[i] == layer) return i;
    return -1;
}

int r3si_init(Model *m, const Config *cfg, Error *err) {
    const Backend *be = m->be;
    int D = m->shape.d_model;
    for (int i = 0; i < cfg->r3si_n_layers; i++) {
        if (cfg->r3si_layers[i] >= cfg->n_layer)
            return error_set(err, "r3si.layers: block %d does not exist in a %d-layer model (model.n_layer)", cfg->r3si_layers[i], cfg->n_layer);
        for (int j = 0; j < i; j++)
            if (cfg->r3si_layers[j] >= cfg->r3si_layers[i])
                return error_set(err, "r3si.layers: blocks must be distinct and ascending (%d after %d)", cfg->r3si_layers[i], cfg->r3si_layers[j]);
    }
    if (cfg->r3si_k > D) return error_set(err, "r3si.k: %d is larger than model.d_model %d", cfg->r3si_k, D);
    if (cfg->r3si_ds > D) return error_set(err, "r3si.d_s: %d is larger than model.d_model %d", cfg->r3si_ds, D);
    R3si *r = xcalloc(1, sizeof *r);
    r->n_ckpt = cfg->r3si_n_layers;
    memcpy(r->layers, cfg->r3si_layers, sizeof(int) * (size_t)r->n_ckpt);
    r->k = cfg->r3si_k;
    r->ds = cfg->r3si_ds;
    r->D = D;
    r->monitor_every = cfg->r3si_monitor_every;
    r->adaptive = cfg->r3si_adaptive;
    r->inject = cfg->r3si_inject;
    r->center = cfg->r3si_center;
    r->tau0 = cfg->r3si_tau_init_frac * D;
    r->tau = r->tau0;
    r->seed = cfg->seed;
    // alpha_c = 0 and V_c = 0 before the first monitor step.
    for (int i = 0; i < r->n_ckpt; i++) {
        int layer = r->layers[i];
        if (layer < m->layer_begin || layer >= m->layer_end) continue;
        r->V[i] = be->alloc((size_t)D * r->k);
        r->gram[i] = be->alloc((size_t)D * D);
        r->colsum[i] = be->alloc((size_t)D);
    }
    m->r3si = r;
    return 0;
}

void r3si_free(Model *m) {
    R3si *r = m->r3si;
    if (!r) return;
    for (int i = 0; i < r->n_ckpt; i++) {
        if (r->V[i]) m->be->free(r->V[i]);
        if (r->gram[i]) m->be->free(r->gram[i]);
        if (r->colsum[i]) m->be->free(r->colsum[i]);
    }
    free(r);
    m->r3si = NULL;
}

// This micro-batch's covariance C = H^T H / N (D,D) into a->r3si_cov; returns PR(C) and its a, b.
static double micro_batch_pr(const Model *m, Activations *a, const void *x, double *tr, double *frob_sq) {
    const Backend *be = m->be;
    int N = a->B * a->T, D = m->shape.d_model;
    be->gemm(1, 0, D, D, N, 1.0 / N, x, D, x, D, 0, a->r3si_cov, D);   // (D,N)(N,D)
    *tr = be->diag_sum(a->r3si_cov, D);
    *frob_sq = be->sum_squares(a->r3si_cov, (size_t)D * D);
    return *frob_sq > 0 ? (*tr) * (*tr) / *frob_sq : 0;
}

const void *r3si_block_forward(Model *m, Activations *a, int li, const void *x) {
    R3si *r = m->r3si;
    int layer = m->layer_begin + li, c = r3si_index(r, layer);
    if (c < 0) return x;
    const Backend *be = m->be;
    int N = a->B * a->T, D = m->shape.d_model, k = r->k, ds = r->ds;
    if (r->monitor_step) {
        be->gemm(1, 0, D, D, N, 1.0, x, D, x, D, 1.0, r->gram[c], D);   // gram (+=) H^T H
        if (r->center) be->column_sums(r->colsum[c], x, N, D);
    }
    if (r->lsd_scale > 0) {
        double tr, frob;
        double pr = micro_batch_pr(m, a, x, &tr, &frob);
        a->lsd_sum += pr < r->tau ? r->tau - pr : 0;
    }
    if (!r->inject) return x;
    void *xin = be_offset(be, a->r3si_in, (size_t)li * N * D);
    be->copy(xin, x, (size_t)N * D);
    if (r->alpha[c] <= 0) return xin;
    void *z = be_offset(be, a->r3si_z, (size_t)li * N * ds);
    const void *Ws = model_param(m, PARAM_R3SI_WS, layer);   // (ds, D)
    be->gemm(0, 1, N, ds, D, 1.0, x, D, Ws, D, 0, z, ds);           // z = H W_s^T (N,ds)
    be->gemm(0, 0, N, D, ds, 1.0, z, ds, Ws, D, 0, a->r3si_u, D);   // u = z W_s (N,D)
    be->gemm(0, 0, N, k, D, 1.0, a->r3si_u, D, r->V[c], k, 0, a->r3si_p, k);      // u V (N,k)
    be->gemm(0, 1, N, D, k, -1.0, a->r3si_p, k, r->V[c], k, 1.0, a->r3si_u, D);   // u - (u V) V^T
    be->axpy(xin, r->alpha[c], a->r3si_u, (size_t)N * D);                          // H + delta
    if (r->measure_injection) {
        r->injected_sq[c] = r->alpha[c] * r->alpha[c] * be->sum_squares(a->r3si_u, (size_t)N * D);
        r->input_sq[c] = be->sum_squares(x, (size_t)N * D);
    }
    return xin;
}

void r3si_block_backward(Model *m, Activations *a, int li, const void *x) {
    R3si *r = m->r3si;
    int layer = m->layer_begin + li, c = r3si_index(r, layer);
    if (c < 0) return;
    const Backend *be = m->be;
    int N = a->B * a->T, D = m->shape.d_model, k = r->k, ds = r->ds;
    if (r->inject && r->alpha[c] > 0) {
        // H' = H + alpha (z W_s) P, z = H W_s^T, P = I - V V^T; g = dL/dH' in a->dresidual.
        const void *z = be_offset(be, a->r3si_z, (size_t)li * N * ds);
        const void *Ws = model_param(m, PARAM_R3SI_WS, layer);
        void *dWs = model_grad(m, PARAM_R3SI_WS, layer);
        be->gemm(0, 0, N, k, D, 1.0, a->dresidual, D, r->V[c], k, 0, a->r3si_p, k);   // g V
        be->copy(a->r3si_g, a->dresidual, (size_t)N * D);
        be->gemm(0, 1, N, D, k, -1.0, a->r3si_p, k, r->V[c], k, 1.0, a->r3si_g, D);    // g_p = g P
        be->gemm(0, 1, N, ds, D, r->alpha[c], a->r3si_g, D, Ws, D, 0, a->r3si_dz, ds); // dz = alpha g_p W_s^T
        be->gemm(1, 0, ds, D, N, r->alpha[c], z, ds, a->r3si_g, D, 1.0, dWs, D);       // dW_s += alpha z^T g_p
        be->gemm(1, 0, ds, D, N, 1.0, a->r3si_dz, ds, x, D, 1.0, dWs, D);               // dW_s += dz^T H
        be->gemm(0, 0, N, D, ds, 1.0, a->r3si_dz, ds, Ws, D, 1.0, a->dresidual, D);    // dH = g + dz W_s
    }
    if (r->lsd_scale > 0) {
        double tr, frob;
        double pr = micro_batch_pr(m, a, x, &tr, &frob);
        if (pr < r->tau && frob > 0) {
            // L = scale (tau - PR): dL/dH = -scale (4 a / (N b)) (H - (a / b) H C)
            double g = -r->lsd_scale * 4 * tr / (N * frob);
            be->gemm(0, 0, N, D, D, 1.0, x, D, a->r3si_cov, D, 0, a->r3si_hc, D);   // H C
            be->axpy(a->dresidual, g, x, (size_t)N * D);
            be->axpy(a->dresidual, -g * tr / frob, a->r3si_hc, (size_t)N * D);
        }
    }
}

void r3si_monitor_update(Model *m, Comm *comm, long step, double tokens, int grads_reduced) {
    R3si *r = m->r3si;
    const Backend *be = m->be;
    int D = r->D, NH = m->shape.n_head;
    // Per checkpoint layer: rank, and the variance of head-gradient cosines; every rank adds what
    // its stage owns (replica 0 only, so that each layer counts once), then all reduce.
    double sums[3 * CFG_MAX_LIST + 2];
    memset(sums, 0, sizeof sums);
    double *C = xmalloc(sizeof(double) * D * D), *mu = xmalloc(sizeof(double) * D);
    double *V = xmalloc(sizeof(double) * D * r->k);
    size_t n_head = (size_t)4 * m->shape.head_size * D;
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
        top_eigenvectors(C, D, r->k, 8, 2, r->seed, 0x52335349ull * 1000003ull + (uint64_t)step * 64 + (uint64_t)c, V, NULL);
        float *Vf = xmalloc(sizeof(float) * D * r->k);
        for (size_t i = 0; i < (size_t)D * r->k; i++) Vf[i] = (float)V[i];
        be->upload(r->V[c], Vf, (size_t)D * r->k);
        free(Vf);
        comm->dp_broadcast(comm, r->V[c], (size_t)D * r->k);
        model_head_gradients(m, r->layers[c], G);
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
