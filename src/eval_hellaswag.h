// eval_hellaswag.h: multiple-choice scoring of a checkpoint (`entrank eval --task hellaswag FILE`),
// as llm.c's hellaswag.py scores GPT-2: each ending's cross-entropy over its own tokens given the
// context; the ending with the lowest mean loss per token is the model's answer (acc_norm, the
// headline number), and the lowest summed loss gives llm.c's plain `acc`.
#pragma once
#include "comm.h"
#include "commands.h"
#include "config.h"
#include "eval_task_file.h"

typedef struct {
    long items;
    long correct_norm;   // lowest mean loss per ending token is the label
    long correct_sum;    // lowest summed loss is the label
    long step;           // the checkpoint's step
} McScore;

// Collective over all ranks: loads `checkpoint` on this topology (any dp x pp), scores every item
// (item batches go round-robin to the dp replicas; each pipeline passes activations on as in
// evaluation) and returns the same totals on every rank. Returns -1 with err on a bad checkpoint.
int eval_multiple_choice(const Config *cfg, const RunDevice *dev, Comm *comm, const char *checkpoint,
                         const McItems *items, McScore *out, Error *err);
