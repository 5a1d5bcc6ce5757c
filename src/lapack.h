// lapack.h: the few LAPACK routines entrank uses, from OpenBLAS (Fortran calling convention;
// gfortran passes the lengths of character arguments as trailing hidden size_t parameters).
#pragma once
#include <stddef.h>

void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
            const int *lwork, int *info, size_t jobz_len, size_t uplo_len);
void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau, double *work, const int *lwork, int *info);
void dorgqr_(const int *m, const int *n, const int *k, double *a, const int *lda, const double *tau, double *work,
             const int *lwork, int *info);
