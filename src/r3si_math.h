// r3si_math.h: the host-side linear algebra of R3SI's monitor (docs/design.md section 4), in double
// precision: participation ratio, top-k eigenvectors by randomized subspace iteration, gradient
// diversity and the adaptive threshold. Matrices are row-major.
#pragma once
#include <stddef.h>
#include <stdint.h>

// PR = tr(C)^2 / ||C||_F^2 of a symmetric (D,D) matrix: the participation ratio of its eigenvalues.
double participation_ratio(const double *C, int D);

// Top-k eigenvectors of the symmetric positive semi-definite C (D,D) by randomized subspace
// iteration (Halko, Martinsson & Tropp 2011): oversampling `oversample`, `power_iters` power
// iterations, the Gaussian test matrix drawn from (seed, stream) so that every replica gets the
// same V. V (D,k) row-major, columns in decreasing eigenvalue order; eigenvalues (k) if not NULL.
void top_eigenvectors(const double *C, int D, int k, int oversample, int power_iters, uint64_t seed, uint64_t stream,
                      double *V, double *eigenvalues);

// Variance over the pairs (h, h') of cos(G_h, G_h'), G (H, n) one flattened gradient per head.
double head_gradient_diversity(const double *G, int H, size_t n);

// The adaptive threshold: tau = clamp(tau0 (rho_ref / rho)^0.5, 0.25 D, 0.6 D).
double adaptive_tau(double tau0, double rho_ref, double rho, int D);
