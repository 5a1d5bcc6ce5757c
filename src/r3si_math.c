#include "r3si_math.h"
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>
#include "common.h"
#include "lapack.h"
#include "rng.h"
#include "stream_stats.h"

// OpenBLAS splits long dot products and LAPACK's matrix-vector steps over its threads and adds
// their partial results in an order that depends on how many there are. These small fp64 problems
// run on one thread instead, so that a run's numbers do not depend on OMP_NUM_THREADS
// (tests/test_thread_count_invariance.py). OpenBLAS's OpenMP build reads the thread count at each call.
static int blas_one_thread_begin(void) {
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    return threads;
}

static void blas_one_thread_end(int threads) { omp_set_num_threads(threads); }

double participation_ratio(const double *C, int D) {
    StreamMoments m = {0, 0};
    for (int i = 0; i < D; i++) m.trace += C[(size_t)i * D + i];
    for (size_t i = 0; i < (size_t)D * D; i++) m.frob_sq += C[i] * C[i];
    return participation_ratio_of(m);
}

// Q (D,l) <- an orthonormal basis of the columns of Y (D,l), in place (Householder QR).
static void orthonormalise(double *Y, int D, int l) {
    // LAPACK is column-major: the row-major (D,l) Y is the column-major (l,D) Y^T. Factor a
    // column-major copy instead.
    double *A = xmalloc(sizeof(double) * D * l), *tau = xmalloc(sizeof(double) * l);
    for (int i = 0; i < D; i++)
        for (int j = 0; j < l; j++) A[(size_t)j * D + i] = Y[(size_t)i * l + j];
    int info, lwork = -1;
    double query;
    dgeqrf_(&D, &l, A, &D, tau, &query, &lwork, &info);
    lwork = (int)query;
    double *work = xmalloc(sizeof(double) * (lwork > 1 ? lwork : 1));
    dgeqrf_(&D, &l, A, &D, tau, work, &lwork, &info);
    if (info) die(EXIT_FAILURE_OTHER, "LAPACK dgeqrf failed (%d)", info);
    free(work);
    lwork = -1;
    dorgqr_(&D, &l, &l, A, &D, tau, &query, &lwork, &info);
    lwork = (int)query;
    work = xmalloc(sizeof(double) * (lwork > 1 ? lwork : 1));
    dorgqr_(&D, &l, &l, A, &D, tau, work, &lwork, &info);
    if (info) die(EXIT_FAILURE_OTHER, "LAPACK dorgqr failed (%d)", info);
    for (int i = 0; i < D; i++)
        for (int j = 0; j < l; j++) Y[(size_t)i * l + j] = A[(size_t)j * D + i];
    free(work); free(tau); free(A);
}

void top_eigenvectors(const double *C, int D, int k, int oversample, int power_iters, uint64_t seed, uint64_t stream,
                      double *V, double *eigenvalues) {
    int l = k + oversample;
    if (l > D) l = D;
    int threads = blas_one_thread_begin();
    double *omega = xmalloc(sizeof(double) * D * l), *Y = xmalloc(sizeof(double) * D * l);
    for (size_t i = 0; i < (size_t)D * l; i++) omega[i] = rng_normal(seed, stream, i);
    // Y = C Omega; then power iterations Y = C orth(Y) sharpen the spectrum's gap.
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, l, D, 1, C, D, omega, l, 0, Y, l);
    for (int it = 0; it < power_iters; it++) {
        orthonormalise(Y, D, l);
        memcpy(omega, Y, sizeof(double) * D * l);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, l, D, 1, C, D, omega, l, 0, Y, l);
    }
    orthonormalise(Y, D, l);   // Q (D,l)
    // B = Q^T C Q (l,l), its eigen-decomposition, V = Q U_top.
    double *CQ = omega, *Bm = xmalloc(sizeof(double) * l * l), *w = xmalloc(sizeof(double) * l);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, l, D, 1, C, D, Y, l, 0, CQ, l);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l, l, D, 1, Y, l, CQ, l, 0, Bm, l);
    for (int i = 0; i < l; i++)   // exact symmetry before the symmetric solver
        for (int j = i + 1; j < l; j++) Bm[(size_t)i * l + j] = Bm[(size_t)j * l + i] = 0.5 * (Bm[(size_t)i * l + j] + Bm[(size_t)j * l + i]);
    int info, lwork = -1;
    double query;
    dsyev_("V", "U", &l, Bm, &l, w, &query, &lwork, &info, 1, 1);
    lwork = (int)query;
    double *work = xmalloc(sizeof(double) * (lwork > 1 ? lwork : 1));
    dsyev_("V", "U", &l, Bm, &l, w, work, &lwork, &info, 1, 1);
    if (info) die(EXIT_FAILURE_OTHER, "LAPACK dsyev failed (%d)", info);
    // Column-major eigenvectors of a symmetric matrix: row i of the row-major buffer is vector i.
    // dsyev sorts eigenvalues ascending; take the last k, largest first.
    for (int j = 0; j < k && j < l; j++) {
        const double *u = Bm + (size_t)(l - 1 - j) * l;
        if (eigenvalues) eigenvalues[j] = w[l - 1 - j];
        for (int i = 0; i < D; i++) {
            double acc = 0;
            for (int t = 0; t < l; t++) acc += Y[(size_t)i * l + t] * u[t];
            V[(size_t)i * k + j] = acc;
        }
    }
    free(work); free(w); free(Bm); free(Y); free(omega);
    blas_one_thread_end(threads);
}

double head_gradient_diversity(const double *G, int H, size_t n) {
    double *norms = xmalloc(sizeof(double) * H);
    int threads = blas_one_thread_begin();
    for (int h = 0; h < H; h++) norms[h] = sqrt(cblas_ddot((int)n, G + (size_t)h * n, 1, G + (size_t)h * n, 1));
    double sum = 0, sum_sq = 0;
    int pairs = 0;
    for (int a = 0; a < H; a++)
        for (int b = a + 1; b < H; b++) {
            double d = norms[a] * norms[b];
            double c = d > 0 ? cblas_ddot((int)n, G + (size_t)a * n, 1, G + (size_t)b * n, 1) / d : 0;
            sum += c;
            sum_sq += c * c;
            pairs++;
        }
    free(norms);
    blas_one_thread_end(threads);
    if (pairs == 0) return 0;
    double mean = sum / pairs;
    return sum_sq / pairs - mean * mean;
}

double adaptive_tau(double tau0, double rho_ref, double rho, int D) {
    double tau = rho > 0 ? tau0 * sqrt(rho_ref / rho) : 0.6 * D;
    double lo = 0.25 * D, hi = 0.6 * D;
    return tau < lo ? lo : (tau > hi ? hi : tau);
}
