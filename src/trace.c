// trace.c: the per-layer traces (DESIGN section 7) from a model's activations and gradients.
#include "trace.h"
#include <math.h>
#include <string.h>
#include "r3si_math.h"
#include "sga.h"

void trace_init(TraceRecord *r, const ModelShape *s, int B) {
    memset(r, 0, sizeof *r);
    r->L = s->n_layer;
    r->B = B;
    r->H = s->n_head;
    r->T = s->seq_len;
    size_t L = (size_t)r->L, H = (size_t)r->H;
    r->entropy_bh = xcalloc(L * B * H, sizeof(double));
    r->entropy = xcalloc(L * H, sizeof(double));
    r->redundancy = xcalloc(L, sizeof(double));
    r->eff_rank = xcalloc(L * H, sizeof(double));
    r->resid_rank = xcalloc(L + 1, sizeof(double));
    r->token_cos = xcalloc(L + 1, sizeof(double));
    r->grad_div = xcalloc(L, sizeof(double));
    r->sga_alpha = xcalloc(L, sizeof(double));
    r->sga_stats = xcalloc(L * 4, sizeof(double));
    r->sga_band = xcalloc(L * 4, sizeof(double));
}

void trace_free(TraceRecord *r) {
    double *all[] = {r->entropy_bh, r->entropy, r->redundancy, r->eff_rank, r->resid_rank, r->token_cos, r->grad_div,
                     r->sga_alpha, r->sga_stats, r->sga_band};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
    memset(r, 0, sizeof *r);
}

void trace_clear(TraceRecord *r) {
    size_t L = (size_t)r->L, H = (size_t)r->H, B = (size_t)r->B;
    memset(r->entropy_bh, 0, L * B * H * sizeof(double));
    memset(r->entropy, 0, L * H * sizeof(double));
    memset(r->redundancy, 0, L * sizeof(double));
    memset(r->eff_rank, 0, L * H * sizeof(double));
    memset(r->resid_rank, 0, (L + 1) * sizeof(double));
    memset(r->token_cos, 0, (L + 1) * sizeof(double));
    memset(r->grad_div, 0, L * sizeof(double));
    memset(r->sga_alpha, 0, L * sizeof(double));
    memset(r->sga_stats, 0, L * 4 * sizeof(double));
    memset(r->sga_band, 0, L * 4 * sizeof(double));
}

void trace_stream_stats(const Backend *be, const void *x, int B, int T, int C, double *pr, double *cos_adj) {
    int N = B * T;
    void *cov = be->alloc((size_t)C * C);
    be->gemm(1, 0, C, C, N, 1.0 / N, x, C, x, C, 0, cov, C);   // C = H^T H / N
    double tr = be->diag_sum(cov, C), frob = be->sum_squares(cov, (size_t)C * C);
    *pr = frob > 0 ? tr * tr / frob : 0;
    be->free(cov);
    double *h = xmalloc(sizeof(double) * N * C), sum = 0;
    be->download_f64(h, x, (size_t)N * C);
    for (int b = 0; b < B; b++)
        for (int t = 0; t + 1 < T; t++) {
            const double *u = h + ((size_t)b * T + t) * C, *v = u + C;
            double uv = 0, uu = 0, vv = 0;
            for (int c = 0; c < C; c++) { uv += u[c] * v[c]; uu += u[c] * u[c]; vv += v[c] * v[c]; }
            sum += uu > 0 && vv > 0 ? uv / sqrt(uu * vv) : 0;
        }
    *cos_adj = T > 1 ? sum / ((double)B * (T - 1)) : 0;
    free(h);
}

// Per layer: effective rank ||A||_F^4 / ||A A^T||_F^2 of each head's map, mean over sequences,
// and the mean pairwise cosine of the heads' maps.
static void map_stats(TraceRecord *r, const Model *m, const Activations *a, int li) {
    const Backend *be = m->be;
    int B = a->B, H = r->H, T = a->T, layer = m->layer_begin + li;
    const void *probs = model_layer_probs(m, a, li);   // (B,H,T,T)
    void *aat = be->alloc((size_t)T * T), *gram = be->alloc((size_t)H * H);
    double G[64 * 64], cos_sum = 0;
    int pairs = 0;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const void *A = be_offset(be, (void *)probs, ((size_t)b * H + h) * T * T);
            be->gemm(0, 1, T, T, T, 1.0, A, T, A, T, 0, aat, T);
            double f2 = be->sum_squares(A, (size_t)T * T), g2 = be->sum_squares(aat, (size_t)T * T);
            r->eff_rank[(size_t)layer * H + h] += (g2 > 0 ? f2 * f2 / g2 : 0) / B;
        }
        if (H > 64) continue;
        const void *P = be_offset(be, (void *)probs, (size_t)b * H * T * T);
        be->gemm(0, 1, H, H, T * T, 1.0, P, T * T, P, T * T, 0, gram, H);
        be->download_f64(G, gram, (size_t)H * H);
        for (int h = 0; h < H; h++)
            for (int g = h + 1; g < H; g++) {
                double d = sqrt(G[h * H + h] * G[g * H + g]);
                cos_sum += d > 0 ? G[h * H + g] / d : 0;
                pairs++;
            }
    }
    r->redundancy[layer] = pairs ? cos_sum / pairs : 1.0;
    be->free(aat);
    be->free(gram);
}

static void sga_stats_of_layer(TraceRecord *r, const Model *m, const Activations *a, int li) {
    int layer = m->layer_begin + li, T = a->T;
    size_t R = (size_t)a->B * r->H * T;
    if (m->shape.sga_blend) {
        float alpha;
        m->be->download(&alpha, model_param(m, PARAM_SGA_ALPHA, layer), 1);
        r->sga_alpha[layer] = alpha < 0 ? 0 : (alpha > 1 ? 1 : alpha);
    } else {
        r->sga_alpha[layer] = 1;
    }
    double *stats = xmalloc(sizeof(double) * R * 4), *gate = xmalloc(sizeof(double) * R * T);
    sga_download_layer(m, a, li, stats, gate);
    double band[4] = {0}, count[4] = {0};
    for (size_t row = 0; row < R; row++) {
        for (int s = 0; s < 4; s++) r->sga_stats[(size_t)layer * 4 + s] += stats[row * 4 + s] / R;
        for (int k = 0; k < T; k++) {
            // DC, then the low, middle and high thirds of the remaining frequencies
            int b = k == 0 ? 0 : 1 + (3 * (k - 1)) / (T > 1 ? T - 1 : 1);
            if (b > 3) b = 3;
            band[b] += gate[row * T + k];
            count[b] += 1;
        }
    }
    for (int b = 0; b < 4; b++) r->sga_band[(size_t)layer * 4 + b] = count[b] > 0 ? band[b] / count[b] : NAN;
    free(stats); free(gate);
}

void trace_forward(TraceRecord *r, const Model *m, const Activations *a) {
    int B = a->B, H = r->H;
    double *ent = xmalloc(sizeof(double) * a->n_local * B * H);
    model_head_entropies(m, a, ent);   // (n_local, B, H)
    for (int li = 0; li < a->n_local; li++) {
        int layer = m->layer_begin + li;
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                double e = ent[((size_t)li * B + b) * H + h];
                r->entropy_bh[((size_t)layer * B + b) * H + h] = e;
                r->entropy[(size_t)layer * H + h] += e / B;
            }
        map_stats(r, m, a, li);
        trace_stream_stats(m->be, model_block_input(m, a, li), B, a->T, m->shape.d_model, &r->resid_rank[layer], &r->token_cos[layer]);
        if (m->shape.sga) sga_stats_of_layer(r, m, a, li);
    }
    if (m->has_head && a->n_local > 0)   // the final stream, leaving the last block
        trace_stream_stats(m->be, model_block_output(m, a, a->n_local - 1), B, a->T, m->shape.d_model, &r->resid_rank[r->L],
                           &r->token_cos[r->L]);
    free(ent);
}

void trace_finish(TraceRecord *r, const Model *m, Comm *comm, int grads_reduced) {
    size_t n = (size_t)4 * m->shape.head_size * m->shape.d_model;
    double *G = xmalloc(sizeof(double) * r->H * n);
    for (int layer = m->layer_begin; layer < m->layer_end; layer++) {
        model_head_gradients(m, layer, G);
        if (!grads_reduced) comm->dp_sum_doubles(comm, G, (int)(r->H * n));
        if (comm->dp_index == 0) r->grad_div[layer] = head_gradient_diversity(G, r->H, n);
    }
    free(G);
    size_t L = (size_t)r->L, H = (size_t)r->H, B = (size_t)r->B;
    comm->world_sum(comm, r->entropy_bh, (int)(L * B * H));
    comm->world_sum(comm, r->entropy, (int)(L * H));
    comm->world_sum(comm, r->redundancy, (int)L);
    comm->world_sum(comm, r->eff_rank, (int)(L * H));
    comm->world_sum(comm, r->resid_rank, (int)(L + 1));
    comm->world_sum(comm, r->token_cos, (int)(L + 1));
    comm->world_sum(comm, r->grad_div, (int)L);
    comm->world_sum(comm, r->sga_alpha, (int)L);
    comm->world_sum(comm, r->sga_stats, (int)(L * 4));
    comm->world_sum(comm, r->sga_band, (int)(L * 4));
}
