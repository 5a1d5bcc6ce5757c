// eval_task_file.h: multiple-choice items (HellaSwag and the like) as token ids, read from the
// token file tools/prepare-hellaswag writes. entrank never tokenizes text: the tool applies the
// run's tokenizer, this reader only checks and loads ids.
//
// Format: UTF-8 text, one item per line, `#` lines are comments (the tool records its source file
// and tokenizer there), blank lines are skipped:
//
//     LABEL | CONTEXT IDS | ENDING 0 IDS | ENDING 1 IDS | ...
//
// LABEL is the index of the correct ending; ids are decimal and separated by spaces. Every item has
// the same number of endings (2..EVAL_MAX_ENDINGS; HellaSwag has 4).
#pragma once
#include <stdint.h>
#include "common.h"

#define EVAL_MAX_ENDINGS 16

typedef struct {
    int n_items, n_endings;
    int *label;          // (n_items) index of the correct ending
    int *ctx_len;        // (n_items)
    int32_t **ctx;       // (n_items) context ids
    int *end_len;        // (n_items * n_endings)
    int32_t **end;       // (n_items * n_endings) ending ids, item-major
    int *line;           // (n_items) line of the file each item came from
} McItems;

// Reads and checks the whole file before anything is scored: every id < vocab, the label in range,
// a non-empty context and endings, every ending at most seq_len tokens (the context is cut from
// the left to fit, so at least one context token is always kept). Returns -1 with err
// "PATH: line N: reason" on bad input.
int mc_items_read(const char *path, int vocab, int seq_len, McItems *out, Error *err);
void mc_items_free(McItems *items);
