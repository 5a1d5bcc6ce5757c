// validate.c: the input checks of a run that need more than the config's keys (see validate.h).
#include "validate.h"
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "data/data.h"
#include "attn_core.h"
#include "model.h"
#include "r3si.h"
#include "train.h"

// R3SI's W_s is a parameter of listed layers only: every r3si.layers list must fit.
_Static_assert(CFG_MAX_LIST <= PARAM_MAX_LAYER_LIST, "a parameter's layer list must hold r3si.layers");

// What the model's shape and features allow (formerly r3si_init, head_map_cosines, branch_gains).
static int validate_model(const Config *cfg, Error *err) {
    if (cfg->r3si_enabled) {
        int n = cfg->r3si_n_layers;
        if (n < 1 || n > CFG_MAX_LIST)
            return error_set(err, "r3si.layers: expected 1 to %d checkpoint blocks, got %d", CFG_MAX_LIST, n);
        for (int i = 0; i < n; i++) {
            int layer = cfg->r3si_layers[i];
            if (layer < 0 || layer >= cfg->n_layer)
                return error_set(err, "r3si.layers: block %d does not exist in a %d-layer model (model.n_layer)", layer, cfg->n_layer);
            if (i > 0 && cfg->r3si_layers[i - 1] >= layer)
                return error_set(err, "r3si.layers: blocks must be distinct and ascending (%d after %d)", layer, cfg->r3si_layers[i - 1]);
        }
        if (cfg->r3si_k > cfg->d_model)
            return error_set(err, "r3si.k: %d is larger than model.d_model %d", cfg->r3si_k, cfg->d_model);
        if (cfg->r3si_ds > cfg->d_model)
            return error_set(err, "r3si.d_s: %d is larger than model.d_model %d", cfg->r3si_ds, cfg->d_model);
    }
    // Snapshots are taken at trace steps: listed layers without traces would silently write nothing.
    if (cfg->trace_snapshot_n > 0 && cfg->trace_every == 0)
        return error_set(err, "trace.snapshot_layers: attention snapshots are taken at trace steps; set trace.every > 0 "
                              "(or trace.snapshot_layers = [])");
    for (int i = 0; i < cfg->trace_snapshot_n; i++) {
        int layer = cfg->trace_snapshot_layers[i];
        if (layer >= cfg->n_layer)
            return error_set(err, "trace.snapshot_layers: block %d does not exist in a %d-layer model (model.n_layer)", layer, cfg->n_layer);
        if (i > 0 && cfg->trace_snapshot_layers[i - 1] >= layer)
            return error_set(err, "trace.snapshot_layers: blocks must be distinct and ascending (%d after %d)", layer,
                             cfg->trace_snapshot_layers[i - 1]);
    }
    if (cfg->attention_fused) {
        const AttentionVariant *v = attention_variant_find(cfg->attention_kind);
        if (v && !v->fused_form)
            return error_set(err, "attention.fused: attention.kind \"%s\" has no fused form (set attention.fused = false)", cfg->attention_kind);
        // The regularisers act on the attention weights, which a fused form never holds.
        if (cfg->reg_entropy_coef > 0 || cfg->reg_adr_coef > 0)
            return error_set(err, "attention.fused: reg.%s needs the attention weights, which the fused form does not keep (set attention.fused = false)",
                             cfg->reg_entropy_coef > 0 ? "entropy_coef" : "adr_coef");
    }
    // A tile is a number of (sequence, head) pairs of one micro-batch. The unfused form ignores the
    // key, so that a fused run's config and checkpoints move to it unchanged.
    if (cfg->attention_fused && (long)cfg->attention_tile_heads > (long)cfg->micro_batch_size * cfg->n_head)
        return error_set(err, "attention.tile_heads: %d is more than the %ld (sequence, head) pairs of a micro-batch "
                              "(train.micro_batch_size %d x model.n_head %d); 0 picks the size automatically",
                         cfg->attention_tile_heads, (long)cfg->micro_batch_size * cfg->n_head, cfg->micro_batch_size, cfg->n_head);
    // A block of query rows is part of one pair: the two sizes exclude each other.
    if (cfg->attention_fused && cfg->attention_tile_rows > 0 && cfg->attention_tile_heads > 0)
        return error_set(err, "attention.tile_rows: %d with attention.tile_heads %d; a tile is either whole (sequence, head) "
                              "pairs or query rows of one pair (set one of them to 0)",
                         cfg->attention_tile_rows, cfg->attention_tile_heads);
    if (cfg->attention_fused && cfg->attention_tile_rows > cfg->seq_len)
        return error_set(err, "attention.tile_rows: %d is more than the %d query rows of a sequence (model.seq_len)",
                         cfg->attention_tile_rows, cfg->seq_len);
    if (cfg->reg_adr_coef > 0 && cfg->n_head > ATTN_ADR_MAX_HEADS)
        return error_set(err, "reg.adr_coef: attention diversity regularisation supports up to %d heads, model.n_head is %d",
                         ATTN_ADR_MAX_HEADS, cfg->n_head);
    // Stochastic depth draws per sequence of the global batch only when it can drop something (drop.p > 0).
    if (!strcmp(cfg->drop_mode, "stochastic_depth") && cfg->drop_p > 0 && cfg->batch_size > (long)STOCHASTIC_DEPTH_MAX_SEQUENCES)
        return error_set(err, "train.batch_size: %d is more than %u sequences, the most stochastic depth (drop.mode) draws for in one step",
                         cfg->batch_size, STOCHASTIC_DEPTH_MAX_SEQUENCES);
    return 0;
}

// dp x pp against the batch (check_topology) and the micro-batches one step schedules per rank.
static int validate_topology(const Config *cfg, int world_size, Error *err) {
    if (world_size <= 0) {
        // Unknown dp: only an explicit train.micro_batches can be judged.
        if (cfg->micro_batches > ENTRANK_MAX_MICRO_BATCHES)
            return error_set(err, "train.micro_batches: %d is more than %d, the most micro-batches one step schedules",
                             cfg->micro_batches, ENTRANK_MAX_MICRO_BATCHES);
        return 0;
    }
    if (check_topology(cfg, world_size, err)) return -1;
    int dp = world_size / cfg->pp;
    int m = cfg->batch_size / (dp * cfg->micro_batch_size);
    if (m > ENTRANK_MAX_MICRO_BATCHES)
        return error_set(err, "train.micro_batches: train.batch_size %d / (train.micro_batch_size %d x %d dp replicas) = %d micro-batches per step "
                         "is more than %d, the most one step schedules; raise train.micro_batch_size",
                         cfg->batch_size, cfg->micro_batch_size, dp, m, ENTRANK_MAX_MICRO_BATCHES);
    return 0;
}

// tools/prepare-data writes manifest.json next to the token files it makes; its top-level
// "vocab_size" is the tokenizer's vocabulary. Token ids in the files only show the ids the corpus
// happened to use, so a model one id too small could pass the token pass and then meet that id at
// generation: the manifest is the authority when present. Only the one integer key is read, so a
// full JSON parser is not needed (prepare-data writes it at the top level, once).
static int validate_manifest(const Config *cfg, const char *key, const char *pattern, Error *err) {
    if (!pattern[0]) return 0;
    char path[CFG_PATH_LEN + 32];
    const char *slash = strrchr(pattern, '/');
    int dir_len = slash ? (int)(slash - pattern) : 0;
    // The directory part of a glob must be literal for this to name one directory; prepare-data
    // writes all shards of a corpus to one directory.
    if (slash) snprintf(path, sizeof path, "%.*s/manifest.json", dir_len, pattern);
    else snprintf(path, sizeof path, "manifest.json");
    FILE *f = fopen(path, "rb");
    if (!f) return 0;   // data made by other tools: the token pass below is the check
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strstr(buf, "\"vocab_size\"");
    if (!p) return error_set(err, "%s: vocab_size: missing (the manifest of %s's data)", path, key);
    p += strlen("\"vocab_size\"");
    while (isspace((unsigned char)*p)) p++;
    if (*p != ':') return error_set(err, "%s: vocab_size: expected ':' after the key", path);
    p++;
    char *end;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (end == p || errno || v < 1) return error_set(err, "%s: vocab_size: expected a positive integer", path);
    if (v > cfg->vocab_size)
        return error_set(err, "model.vocab_size: %d does not cover the %lld tokens of the tokenizer in %s (%s)", cfg->vocab_size, v, path, key);
    return 0;
}

// Opens the train and val sources as trainer_init does, checks the vocabulary they need and the
// token ids of the files, and closes them again.
static int validate_data(const Config *cfg, const ValidateScope *scope, Error *err) {
    int files = data_kind_reads_files(cfg->data_kind);
    if (files && !scope->read_files) return 0;
    int part = scope->scan_parts > 0 ? scope->scan_part : 0, parts = scope->scan_parts > 0 ? scope->scan_parts : 1;
    DataSource *src[2] = {NULL, NULL};
    int rc = -1;
    if (files && (validate_manifest(cfg, "data.train", cfg->data_train, err) || validate_manifest(cfg, "data.val", cfg->data_val, err)))
        return -1;
    if (!(src[SPLIT_TRAIN] = data_open(cfg, SPLIT_TRAIN, err))) goto done;
    if (!(src[SPLIT_VAL] = data_open(cfg, SPLIT_VAL, err))) goto done;
    int need = data_vocab_needed(src[SPLIT_TRAIN]);
    if (need > cfg->vocab_size) {
        error_set(err, "model.vocab_size: %d is smaller than the %d tokens data.kind \"%s\" uses", cfg->vocab_size, need, cfg->data_kind);
        goto done;
    }
    if (files) {
        if (data_check_tokens(src[SPLIT_TRAIN], part, parts, err)) goto done;
        if (data_check_tokens(src[SPLIT_VAL], part, parts, err)) goto done;
    }
    rc = 0;
done:
    data_close(src[SPLIT_TRAIN]);
    data_close(src[SPLIT_VAL]);
    return rc;
}

int validate_run(const Config *cfg, const ValidateScope *scope, Error *err) {
    // Cheapest first: the data pass may read the whole corpus.
    if (validate_model(cfg, err)) return -1;
    if (validate_topology(cfg, scope->world_size, err)) return -1;
    return validate_data(cfg, scope, err);
}
