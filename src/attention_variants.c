// attention_variants.c: lookup in ATTENTION_VARIANT_TABLE (attention_variant.h).
#include <string.h>
#include "attention_variant.h"

#define ATTENTION_VARIANT_ADDRESS(name, object) &object,
static const AttentionVariant *const VARIANTS[] = {ATTENTION_VARIANT_TABLE(ATTENTION_VARIANT_ADDRESS)};
#define ATTENTION_VARIANT_NAME(name, object) name,
static const char *const NAMES[] = {ATTENTION_VARIANT_TABLE(ATTENTION_VARIANT_NAME) NULL};
#define N_VARIANTS (sizeof VARIANTS / sizeof VARIANTS[0])

const AttentionVariant *attention_variant_find(const char *name) {
    for (size_t i = 0; i < N_VARIANTS; i++)
        if (!strcmp(NAMES[i], name)) return VARIANTS[i];
    return NULL;
}

const char *const *attention_variant_names(void) { return NAMES; }
