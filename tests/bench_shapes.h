// bench_shapes.h: the model shapes the CPU benchmarks share, as `--set` lists over configs/tiny.cfg,
// so that every benchmark (and README's tables) means the same model by the same name.
#pragma once

// The small shape of issue 21's side-by-side with llm.c's CPU trainer: 8 layers x 128, 4 heads,
// T = 128, B = 8, vocabulary 256 (llm.c's defaults scaled down).
static const char *const BENCH_SMALL[] = {"model.n_layer=8", "model.n_head=4", "model.d_model=128", "model.seq_len=128",
                                          "model.vocab_size=256", "train.batch_size=8", "train.micro_batch_size=8",
                                          "train.steps=1000"};
#define BENCH_SMALL_N ((int)(sizeof BENCH_SMALL / sizeof BENCH_SMALL[0]))

// The d=512 shape: 6 layers x 512, 8 heads, T = 256, B = 8, vocabulary 32000.
static const char *const BENCH_D512[] = {"model.n_layer=6", "model.n_head=8", "model.d_model=512", "model.seq_len=256",
                                         "model.vocab_size=32000", "train.batch_size=8", "train.micro_batch_size=8",
                                         "train.steps=1000"};
#define BENCH_D512_N ((int)(sizeof BENCH_D512 / sizeof BENCH_D512[0]))
