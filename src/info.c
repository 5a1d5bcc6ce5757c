#include "info.h"
#include <ctype.h>
#include <string.h>
#include <math.h>
#include "data/data.h"
#include "flops.h"
#include "memory_estimate.h"
#include "model.h"
#include "train.h"

static void print_count(FILE *out, const char *what, size_t n, size_t total) {
    fprintf(out, "  %-28s %14zu  (%6.2f%%, %.1fM)\n", what, n, 100.0 * n / total, n / 1e6);
}

static const char *bytes_h(double b, char *buf) {
    if (b >= 1024.0 * 1024 * 1024) sprintf(buf, "%.2f GiB", b / (1024.0 * 1024 * 1024));
    else sprintf(buf, "%.2f MiB", b / (1024.0 * 1024));
    return buf;
}

double print_info(const Config *cfg, int dp, int pp, FILE *out) {
    ModelShape s = model_shape_from_config(cfg);
    ParamCounts c = count_params(&s);
    if (pp <= 0) pp = cfg->pp;
    if (dp <= 0) dp = 1;
    fprintf(out, "model: %d layers, %d heads (head size %d), d_model %d, MLP hidden %d, seq_len %d, vocab %d, %s-norm, %s head\n",
            s.n_layer, s.n_head, s.head_size, s.d_model, s.mlp_hidden, s.seq_len, s.vocab_size,
            s.norm == NORM_PRE ? "pre" : "post", s.tie_embeddings ? "tied" : "untied");
    fprintf(out, "parameters: %zu (%.1fM); non-embedding %zu (%.1fM)\n", c.total, c.total / 1e6, c.total - c.embedding,
            (c.total - c.embedding) / 1e6);
    print_count(out, "embeddings (wte + wpe)", c.embedding, c.total);
    print_count(out, "attention (qkv + proj)", c.attention, c.total);
    print_count(out, "mlp (fc + proj)", c.mlp, c.total);
    print_count(out, "layernorms", c.norm, c.total);
    if (c.lm_head) print_count(out, "lm head", c.lm_head, c.total);
    if (c.variant) print_count(out, s.attention->name, c.variant, c.total);
    if (c.hooks) print_count(out, "block hooks (R3SI: W_s)", c.hooks, c.total);
    double fpt = flops_per_token(&s);
    fprintf(out, "FLOPs per token (forward+backward): %.4g = 6 x %zu matmul weights + 12 x L %d x d %d x T %d (attention)%s\n",
            fpt, c.matmul, s.n_layer, s.d_model, s.seq_len, s.attention->extra_flops_per_token ? " + the attention variant's" : "");
    if (c.variant || s.attention->extra_flops_per_token) {
        double extra = s.attention->extra_flops_per_token ? s.attention->extra_flops_per_token(&s) : 0;
        char label[CFG_NAME_LEN];
        size_t i = 0;
        for (; s.attention->name[i] && i + 1 < sizeof label; i++) label[i] = (char)toupper((unsigned char)s.attention->name[i]);
        label[i] = 0;
        fprintf(out, "%s: %zu extra parameters per layer (%zu in all, %.3f%% of the model); %.4g extra FLOPs per token (%.2f%%)",
                label, c.variant / s.n_layer, c.variant, 100.0 * c.variant / c.total, extra,
                100.0 * extra / fpt);
        if (!strcmp(s.attention->name, "sga"))
            fprintf(out, ": DCT pair at FFT cost 2 x 2.5 T log2 T per row, gate MLP, elementwise%s%s%s", cfg->sga_spectral ? "" : " [no DCT]",
                    cfg->sga_fixed_filter ? " [fixed filter]" : "", cfg->sga_blend ? "" : " [alpha fixed at 1]");
        fprintf(out, "\n");
    }
    if (cfg->r3si_enabled) {
        fprintf(out, "R3SI: checkpoint blocks");
        for (int i = 0; i < cfg->r3si_n_layers; i++) fprintf(out, " %d", cfg->r3si_layers[i]);
        fprintf(out, " | monitor every %d steps, k %d | injection %s (d_s %d) | L_SD lambda %g | tau0 %.1f (%s)\n",
                cfg->r3si_monitor_every, cfg->r3si_k, cfg->r3si_inject ? "on" : "off", cfg->r3si_ds, cfg->r3si_lsd_lambda,
                cfg->r3si_tau_init_frac * s.d_model, cfg->r3si_adaptive ? "adaptive" : "fixed");
    }
    long steps = total_steps_of(cfg);
    double tokens = (double)steps * cfg->batch_size * cfg->seq_len;
    fprintf(out, "training: %ld steps x %d sequences x %d tokens = %.4g tokens, %.4g FLOPs\n", steps, cfg->batch_size,
            cfg->seq_len, tokens, tokens * fpt);

    // Memory per rank, stage by stage: each stage's whole device state built by the trainer's own
    // allocation code on a counting backend (memory_estimate.c).
    int micro_per_rank = cfg->micro_batches > 0 ? cfg->micro_batches : cfg->batch_size / (cfg->micro_batch_size * dp);
    if (micro_per_rank < 1) micro_per_rank = 1;
    fprintf(out, "topology: dp %d x pp %d = %d ranks, %d micro-batches of %d sequences per rank and step\n", dp, pp, dp * pp,
            micro_per_rank, cfg->micro_batch_size);
    Config at = *cfg;
    at.pp = pp;
    Error err = {0};
    double need = -1;
    int busiest = 0;
    if (check_topology(&at, dp * pp, &err)) {
        fprintf(out, "memory per rank: not estimated: %s\n", err.msg);
    } else {
        char mode[64];   // what the figures depend on beyond the shape and topology
        snprintf(mode, sizeof mode, "%s%s", recompute_name(cfg->recompute), cfg->attention_fused ? ", attention fused" : "");
        // Every tensor is fp32 but, with train.activations = "bf16", the kept GEMM inputs (model.c)
        const char *precision = cfg->activations == ACTIVATIONS_BF16 ? "bf16 activations" : "fp32";
        char b[8][32];
        for (int stage = 0; stage < pp; stage++) {
            MemoryEstimate m = estimate_memory(&at, dp, pp, stage);
            fprintf(out, "  stage %d (layers %d-%d): params %s, grads %s, AdamW %s, activations %s (%d in flight), other %s, "
                         "trace scratch %s = %s per rank (%s, recompute %s)\n",
                    stage, m.layer_begin, m.layer_end - 1, bytes_h(m.params_bytes, b[0]), bytes_h(m.grads_bytes, b[1]),
                    bytes_h(m.optimizer_bytes, b[2]), bytes_h(m.activation_bytes, b[3]), m.in_flight, bytes_h(m.other_bytes, b[4]),
                    bytes_h(m.transient_bytes, b[5]), bytes_h(m.peak_bytes, b[6]), precision, mode);
            if (m.gpu_need_bytes > need) { need = m.gpu_need_bytes; busiest = stage; }
        }
        MemoryEstimate m = estimate_memory(&at, dp, pp, busiest);
        fprintf(out, "GPU need per rank: %s (stage %d: %s allocated + %s CUDA workspace allowance + %s start-up or trace "
                     "temporary; %s, recompute %s)\n",
                bytes_h(need, b[0]), busiest, bytes_h(m.allocated_bytes, b[1]), bytes_h(m.gpu_extra_bytes, b[2]),
                bytes_h(m.gpu_need_bytes - m.allocated_bytes - m.gpu_extra_bytes, b[3]), precision, mode);
    }
    fprintf(out, "pipeline bubble (p-1)/(m+p-1) = (%d-1)/(%d+%d-1) = %.4f\n", pp, micro_per_rank, pp,
            (double)(pp - 1) / (micro_per_rank + pp - 1));
    return need;
}

int print_data_info(const Config *cfg, FILE *out, Error *err) {
    if (!data_kind_reads_files(cfg->data_kind)) {
        fprintf(out, "data: %s, a synthetic task: examples are generated from (seed, step, index); no windows, no epochs\n", cfg->data_kind);
        return 0;
    }
    DataSource *train = data_open(cfg, SPLIT_TRAIN, err);
    if (!train) return -1;
    DataSource *val = data_open(cfg, SPLIT_VAL, err);
    if (!val) { data_close(train); return -1; }
    int epoch = strcmp(cfg->data_sampling, "random") != 0;
    long steps = total_steps_of(cfg);
    uint64_t samples = (uint64_t)steps * (uint64_t)cfg->batch_size;
    fprintf(out, "data: %s%s, data.sampling \"%s\": %s\n", cfg->data_blend_n ? "blend of " : "", cfg->data_blend_n ? "files" : cfg->data_kind,
            cfg->data_sampling,
            epoch ? "non-overlapping windows of seq_len + 1 tokens (stride seq_len), each once per epoch in a seeded permutation"
                  : "a window at a hashed token offset per sample, with replacement (overlapping windows)");
    fprintf(out, "run: %ld steps x %d sequences = %llu samples of %d tokens\n", steps, cfg->batch_size, (unsigned long long)samples,
            cfg->seq_len);
    double worst = 0;
    for (int i = 0; i < data_n_sources(train); i++) {
        DataSourceStats st;
        data_source_stats(train, i, &st);
        uint64_t got = data_samples_of_source(train, i, samples);
        double epochs = (double)got / (double)st.n_windows;
        if (epochs > worst) worst = epochs;
        fprintf(out, "  train source %d \"%s\": %d file(s), %lld tokens, %lld %s, weight %.6f\n", i, st.name, st.n_shards,
                (long long)st.n_tokens, (long long)st.n_windows, epoch ? "windows per epoch" : "window starts", st.weight);
        if (epoch) {
            uint64_t full = got / (uint64_t)st.n_windows;
            fprintf(out, "    %llu samples = %.4f epochs: every window read %llu%s time(s)%s\n", (unsigned long long)got, epochs,
                    (unsigned long long)full, got % (uint64_t)st.n_windows ? " or one more" : "",
                    epochs <= 1 ? ", no token seen twice" : "");
        } else {
            // With replacement, a start is missed by all `got` draws with probability (1 - 1/n)^got ~ e^-epochs.
            fprintf(out, "    %llu samples = %.4f nominal epochs: expected %.1f%% of window starts never drawn, repetition Poisson(%.4f)\n",
                    (unsigned long long)got, epochs, 100 * exp(-epochs), epochs);
        }
    }
    if (epoch) fprintf(out, "expected repetition: at most %.0f reading(s) of any token (max epochs over sources %.4f)\n", ceil(worst), worst);
    for (int i = 0; i < data_n_sources(val); i++) {
        DataSourceStats st;
        data_source_stats(val, i, &st);
        fprintf(out, "  validation source %d \"%s\"%s: %lld tokens, %lld fixed windows\n", i, st.name,
                cfg->data_val[0] ? "" : " (held-out tail)", (long long)st.n_tokens, (long long)st.n_windows);
    }
    fprintf(out, "validation: %d batch(es) x %d = %ld sequences per evaluation, windows 0.. of the %ld in order, the same at every evaluation\n",
            cfg->eval_batches, cfg->batch_size, (long)cfg->eval_batches * cfg->batch_size, data_n_sequences(val));
    data_close(train);
    data_close(val);
    return 0;
}

int print_data_order(const Config *cfg, long first, long last, FILE *out, Error *err) {
    if (!data_kind_reads_files(cfg->data_kind))
        return error_set(err, "--dump-order: data.kind \"%s\" generates its examples: there are no windows to list", cfg->data_kind);
    DataSource *train = data_open(cfg, SPLIT_TRAIN, err);
    if (!train) return -1;
    fprintf(out, "# step index sample source epoch position window token file (data.sampling \"%s\", seed %llu)\n", cfg->data_sampling,
            (unsigned long long)cfg->seed);
    for (long step = first; step <= last; step++)
        for (int i = 0; i < cfg->batch_size; i++) {
            DataSampleInfo at;
            data_locate(train, (uint64_t)step, i, &at);
            fprintf(out, "%ld %d %llu %d %llu %llu %llu %lld %s\n", step, i, (unsigned long long)at.sample, at.source,
                    (unsigned long long)at.epoch, (unsigned long long)at.position, (unsigned long long)at.window, (long long)at.token,
                    at.path);
        }
    data_close(train);
    return 0;
}
