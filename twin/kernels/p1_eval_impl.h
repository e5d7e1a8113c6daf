/* Body of the P1 kernels for one precision; p1_eval.c includes it twice with
 * REAL = float / double, VEC4 = 4 x REAL (GCC / Clang vector extension), SFX = c64 / c128,
 * LOG2 = log2f / log2.
 *
 * Complex tensors arrive as interleaved (re, im) pairs, C-contiguous over their trailing
 * dimensions. Every input has its own batch stride in elements of its own type: the full
 * per-environment size, or 0 when the input is broadcast over the batch (expand()).
 * Layouts (docs of twin/signal.py): H_BR (B,L,N,M), h_RU (B,L,K,N), h_BU (B,K,M),
 * V (B,M,K), bits (B,L) int64, idx (B,L,N) int64, on (B,L,N) bool, phi (B,L,N).
 *
 * Work arrays are split re / im so that the inner loops are plain multiply-adds; the P1
 * preset's M = 4 antennas and K = 4 users take explicit 4-lane vector paths (2x faster than
 * the auto-vectorized generic loops, which every other size uses). */

#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)

/* unaligned 4-lane load / store (memcpy compiles to one vector move) */
#define LOAD4(v, p) memcpy(&(v), (p), sizeof(v))
#define STORE4(p, v) memcpy((p), &(v), sizeof(v))

/* Gr + j Gi = conj(h_BU) + sum_{l,n} conj(h_RU[l,k,n]) phi[l,n] H_BR[l,n,m] (P1 eq. 1) for
 * one environment: (K, M) split outputs; phi split (pr, pi) of length L*N. */
static void CAT(cascade_one, SFX)(int64_t L, int64_t N, int64_t M, int64_t K,
                                  const REAL *restrict H, const REAL *restrict h, const REAL *restrict hb,
                                  const REAL *restrict pr, const REAL *restrict pi,
                                  REAL *restrict Gr, REAL *restrict Gi)
{
    const int64_t LN = L * N;
    REAL Hr[LN * M], Hi[LN * M], cr[K * LN], ci[K * LN];
    for (int64_t i = 0; i < LN * M; i++) {
        Hr[i] = H[2 * i];
        Hi[i] = H[2 * i + 1];
    }
    for (int64_t l = 0; l < L; l++)
        for (int64_t k = 0; k < K; k++) {
            const REAL *hk = h + 2 * ((l * K + k) * N);
            for (int64_t n = 0; n < N; n++) {
                /* c[k, ln] = conj(h[l,k,n]) * phi[l,n] */
                const REAL hr = hk[2 * n], hi = -hk[2 * n + 1], ar = pr[l * N + n], ai = pi[l * N + n];
                cr[k * LN + l * N + n] = hr * ar - hi * ai;
                ci[k * LN + l * N + n] = hr * ai + hi * ar;
            }
        }
    for (int64_t i = 0; i < K * M; i++) {
        Gr[i] = hb[2 * i];
        Gi[i] = -hb[2 * i + 1];
    }
    if (M == 4) {
        for (int64_t k = 0; k < K; k++) {
            VEC4 gr, gi;
            LOAD4(gr, Gr + 4 * k);
            LOAD4(gi, Gi + 4 * k);
            for (int64_t ln = 0; ln < LN; ln++) {
                VEC4 xr, xi;
                LOAD4(xr, Hr + 4 * ln);
                LOAD4(xi, Hi + 4 * ln);
                const REAL a = cr[k * LN + ln], b = ci[k * LN + ln];
                gr += a * xr - b * xi;
                gi += a * xi + b * xr;
            }
            STORE4(Gr + 4 * k, gr);
            STORE4(Gi + 4 * k, gi);
        }
        return;
    }
    for (int64_t k = 0; k < K; k++)
        for (int64_t ln = 0; ln < LN; ln++) {
            const REAL a = cr[k * LN + ln], b = ci[k * LN + ln];
            for (int64_t m = 0; m < M; m++) {
                Gr[k * M + m] += a * Hr[ln * M + m] - b * Hi[ln * M + m];
                Gi[k * M + m] += a * Hi[ln * M + m] + b * Hr[ln * M + m];
            }
        }
}

int CAT(p1_cascade, SFX)(int64_t B, int64_t L, int64_t N, int64_t M, int64_t K,
                         const REAL *H, int64_t sH, const REAL *h, int64_t sh, const REAL *hb, int64_t shb,
                         const REAL *phi, int64_t sphi, REAL *G)
{
    REAL pr[L * N], pi[L * N], Gr[K * M], Gi[K * M];
    for (int64_t b = 0; b < B; b++) {
        const REAL *pb = phi + 2 * b * sphi;
        for (int64_t i = 0; i < L * N; i++) {
            pr[i] = pb[2 * i];
            pi[i] = pb[2 * i + 1];
        }
        CAT(cascade_one, SFX)(L, N, M, K, H + 2 * b * sH, h + 2 * b * sh, hb + 2 * b * shb, pr, pi, Gr, Gi);
        REAL *Gb = G + 2 * b * K * M;
        for (int64_t i = 0; i < K * M; i++) {
            Gb[2 * i] = Gr[i];
            Gb[2 * i + 1] = Gi[i];
        }
    }
    return 0;
}

/* One pass per environment over P1 eqs. 2, 1, 4, 5 and 7:
 *   phi[l,n] = on[l,n] * circle[(idx[l,n] << (fine_bits - b_l)) & mask]   (eq. 2, the torch lookup)
 *   G        = effective channel                                           (eq. 1)
 *   gamma_k  = |g_k v_k|^2 / ((sum_j |g_k v_j|^2 - |g_k v_k|^2) + noise)  (eq. 4, as twin.signal.sinr)
 *   rate_k   = log2(1 + gamma_k)                                           (eq. 5)
 *   txp_k    = ||v_k||^2, irs_l = (#ON of surface l) * mu[b_l]             (eq. 7; irs may be NULL)
 * for environments [b0, b1). Returns 0, or 1 + the first environment whose bits lie outside
 * the lookup tables (the caller then defers to the torch path, which raises the proper error). */
static int CAT(p1_eval_range, SFX)(int64_t b0, int64_t b1, int64_t L, int64_t N, int64_t M, int64_t K,
                                   const REAL *H, int64_t sH, const REAL *h, int64_t sh, const REAL *hb, int64_t shb,
                                   const int64_t *bits, int64_t sbits, const int64_t *idx, int64_t sidx,
                                   const uint8_t *on, int64_t son, const REAL *V, int64_t sV,
                                   const REAL *circle, int64_t fine_bits, double noise_w,
                                   const double *mu, int64_t n_mu,
                                   REAL *rate, REAL *txp, double *irs)
{
    REAL pr[L * N], pi[L * N], Gr[K * M], Gi[K * M], Vr[M * K], Vi[M * K], gain[K];
    const uint64_t mask = ((uint64_t)1 << fine_bits) - 1;
    const REAL noise = (REAL)noise_w;
    for (int64_t b = b0; b < b1; b++) {
        const int64_t *bb = bits + b * sbits;
        const int64_t *ib = idx + b * sidx;
        const uint8_t *ob = on + b * son;
        for (int64_t l = 0; l < L; l++) {
            const int64_t bl = bb[l];
            if (bl < 0 || bl > fine_bits || (irs && bl >= n_mu))
                return (int)(1 + b);
            const int shift = (int)(fine_bits - bl);
            int64_t n_on = 0;
            for (int64_t n = 0; n < N; n++) {
                const uint64_t f = ((uint64_t)ib[l * N + n] << shift) & mask;
                const int is_on = ob[l * N + n] != 0;  /* arithmetic, not a branch: ON/OFF is random */
                const REAL rho = (REAL)is_on;
                n_on += is_on;
                pr[l * N + n] = circle[2 * f] * rho;
                pi[l * N + n] = circle[2 * f + 1] * rho;
            }
            if (irs)
                irs[b * L + l] = (double)n_on * mu[bl];
        }
        CAT(cascade_one, SFX)(L, N, M, K, H + 2 * b * sH, h + 2 * b * sh, hb + 2 * b * shb, pr, pi, Gr, Gi);
        const REAL *Vb = V + 2 * b * sV;
        for (int64_t i = 0; i < M * K; i++) {
            Vr[i] = Vb[2 * i];
            Vi[i] = Vb[2 * i + 1];
        }
        for (int64_t k = 0; k < K; k++) {
            /* row k of G V: the amplitude of every stream j at user k */
            REAL total = 0;
            if (K == 4) {
                VEC4 yr = {0, 0, 0, 0}, yi = {0, 0, 0, 0};
                for (int64_t m = 0; m < M; m++) {
                    const REAL gr = Gr[k * M + m], gi = Gi[k * M + m];
                    VEC4 vr, vi;
                    LOAD4(vr, Vr + 4 * m);
                    LOAD4(vi, Vi + 4 * m);
                    yr += gr * vr - gi * vi;
                    yi += gr * vi + gi * vr;
                }
                const VEC4 g = yr * yr + yi * yi;
                for (int j = 0; j < 4; j++) {
                    gain[j] = g[j];
                    total += g[j];
                }
            } else {
                for (int64_t j = 0; j < K; j++) {
                    REAL yr = 0, yi = 0;
                    for (int64_t m = 0; m < M; m++) {
                        const REAL gr = Gr[k * M + m], gi = Gi[k * M + m];
                        yr += gr * Vr[m * K + j] - gi * Vi[m * K + j];
                        yi += gr * Vi[m * K + j] + gi * Vr[m * K + j];
                    }
                    gain[j] = yr * yr + yi * yi;
                    total += gain[j];
                }
            }
            const REAL sig = gain[k];
            rate[b * K + k] = LOG2((REAL)1 + sig / ((total - sig) + noise));
        }
        for (int64_t k = 0; k < K; k++) {
            REAL p = 0;
            for (int64_t m = 0; m < M; m++)
                p += Vr[m * K + k] * Vr[m * K + k] + Vi[m * K + k] * Vi[m * K + k];
            txp[b * K + k] = p;
        }
    }
    return 0;
}

/* Arguments of one p1_eval_range call, for a worker thread. */
typedef struct {
    int64_t b0, b1, L, N, M, K;
    const REAL *H; int64_t sH; const REAL *h; int64_t sh; const REAL *hb; int64_t shb;
    const int64_t *bits; int64_t sbits; const int64_t *idx; int64_t sidx;
    const uint8_t *on; int64_t son; const REAL *V; int64_t sV;
    const REAL *circle; int64_t fine_bits; double noise_w; const double *mu; int64_t n_mu;
    REAL *rate; REAL *txp; double *irs;
    int status;
} CAT(p1_job, SFX);

static void *CAT(p1_job_run, SFX)(void *arg)
{
    CAT(p1_job, SFX) *j = arg;
    j->status = CAT(p1_eval_range, SFX)(j->b0, j->b1, j->L, j->N, j->M, j->K, j->H, j->sH, j->h, j->sh, j->hb, j->shb,
                                        j->bits, j->sbits, j->idx, j->sidx, j->on, j->son, j->V, j->sV, j->circle,
                                        j->fine_bits, j->noise_w, j->mu, j->n_mu, j->rate, j->txp, j->irs);
    return NULL;
}

/* The whole batch on up to n_threads threads (contiguous slices of environments; each
 * environment's arithmetic is the same whatever the split, so results do not depend on it).
 * A thread that cannot be started leaves its slice to the calling thread. */
int CAT(p1_eval, SFX)(int64_t B, int64_t L, int64_t N, int64_t M, int64_t K,
                      const REAL *H, int64_t sH, const REAL *h, int64_t sh, const REAL *hb, int64_t shb,
                      const int64_t *bits, int64_t sbits, const int64_t *idx, int64_t sidx,
                      const uint8_t *on, int64_t son, const REAL *V, int64_t sV,
                      const REAL *circle, int64_t fine_bits, double noise_w,
                      const double *mu, int64_t n_mu,
                      REAL *rate, REAL *txp, double *irs, int64_t n_threads)
{
    if (n_threads > MAX_THREADS)
        n_threads = MAX_THREADS;
    if (n_threads > B / MIN_ENVS_PER_THREAD)
        n_threads = B / MIN_ENVS_PER_THREAD;
    if (n_threads < 1)
        n_threads = 1;
    CAT(p1_job, SFX) jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int64_t t = 0; t < n_threads; t++) {
        jobs[t] = (CAT(p1_job, SFX)){B * t / n_threads, B * (t + 1) / n_threads, L, N, M, K, H, sH, h, sh, hb, shb,
                                     bits, sbits, idx, sidx, on, son, V, sV, circle, fine_bits, noise_w, mu, n_mu,
                                     rate, txp, irs, 0};
        if (t > 0)
            started[t] = pthread_create(&tid[t], NULL, CAT(p1_job_run, SFX), &jobs[t]) == 0;
    }
    CAT(p1_job_run, SFX)(&jobs[0]);
    int status = jobs[0].status;
    for (int64_t t = 1; t < n_threads; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            CAT(p1_job_run, SFX)(&jobs[t]);
        if (!status)
            status = jobs[t].status;
    }
    return status;
}

#undef LOAD4
#undef STORE4
#undef CAT
#undef CAT2
