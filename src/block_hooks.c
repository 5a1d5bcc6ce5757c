// block_hooks.c: the table of block hooks (block_hook.h).
#include "block_hook.h"

#define BLOCK_HOOK_ADDRESS(object) &object,
static const BlockHook *const HOOKS[] = {BLOCK_HOOK_TABLE(BLOCK_HOOK_ADDRESS)};

int block_hooks_for_config(const Config *cfg, const BlockHook **out) {
    int n = 0;
    for (size_t i = 0; i < sizeof HOOKS / sizeof HOOKS[0]; i++)
        if (HOOKS[i]->enabled(cfg)) out[n++] = HOOKS[i];
    return n;
}
