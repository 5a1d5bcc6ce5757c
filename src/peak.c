#include "peak.h"
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "common.h"
#include "timer.h"

double measure_sgemm_gflops(void) {
    enum { n = 2048, runs = 5 };
    float *a = xmalloc(sizeof(float) * n * n), *b = xmalloc(sizeof(float) * n * n), *c = xmalloc(sizeof(float) * n * n);
    for (size_t i = 0; i < (size_t)n * n; i++) { a[i] = (float)(i % 7) * 0.1f; b[i] = (float)(i % 5) * 0.1f; }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);   // warm-up
    double gflops[runs];
    for (int r = 0; r < runs; r++) {
        double t0 = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        gflops[r] = 2.0 * n * n * n / (now_seconds() - t0) / 1e9;
    }
    // The ceiling is the best run: a slower one measured a disturbance (another process, a page
    // fault), not the machine.
    qsort(gflops, runs, sizeof(double), compare_doubles);
    free(a); free(b); free(c);
    return gflops[runs - 1];
}

// Datasheet figures, dense (the datasheets quote bf16 "with sparsity", twice these). MFU on a GPU
// is the model's FLOP rate over this peak, as llm.c and Megatron-LM report it. More specific names
// come first: "H100 PCIe" before the "H100" that stands for the SXM5 part.
static const struct {
    const char *all[3];    // every substring must occur in the device name
    double tflops;
    const char *source;
} GPU_PEAKS[] = {
    {{"H100", "PCIe", NULL}, 756.0, "NVIDIA H100 PCIe datasheet: 1,513 TFLOP/s bf16 with sparsity, 756 dense"},
    {{"H100", "NVL", NULL}, 0.0, "H100 NVL: not in the table"},
    {{"H100", NULL, NULL}, 989.4, "NVIDIA H100 SXM5 datasheet: 1,979 TFLOP/s bf16 with sparsity, 989.4 dense"},
    {{"H200", NULL, NULL}, 989.4, "NVIDIA H200 SXM datasheet: 1,979 TFLOP/s bf16 with sparsity, 989.4 dense"},
    {{"A100", NULL, NULL}, 312.0, "NVIDIA A100 datasheet: 624 TFLOP/s bf16 with sparsity, 312 dense"},
};

double gpu_bf16_peak_tflops(const char *device_name, const char **source) {
    for (size_t i = 0; i < sizeof GPU_PEAKS / sizeof GPU_PEAKS[0]; i++) {
        int match = 1;
        for (int k = 0; k < 3 && GPU_PEAKS[i].all[k]; k++) match = match && strstr(device_name, GPU_PEAKS[i].all[k]) != NULL;
        if (!match) continue;
        if (source) *source = GPU_PEAKS[i].tflops > 0 ? GPU_PEAKS[i].source : "this device's peak is not in the table (src/peak.c)";
        return GPU_PEAKS[i].tflops;
    }
    if (source) *source = "this device's peak is not in the table (src/peak.c)";
    return 0;
}
