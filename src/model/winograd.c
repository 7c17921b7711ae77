/* Winograd F(4x4, 3x3) convolution over bands of tile rows: input transform
 * into packed panels, 36 small GEMMs with a register-blocked micro-kernel
 * (AVX-512 or AVX2+FMA as far as the CPU has them) or, for the openblas
 * backend, into row-major matrices for 36 cblas_sgemm calls; output
 * transform fused with bias + ReLU.
 * Transforms are written as loops over tiles so that they vectorise. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define SEGD_X86 1
#endif

#include "model/kernels.h"
#include "model/vec.h"

#define MR SEGD_WINO_MR

int segd_wino_cout_pad(int cout)
{
    return (cout + MR - 1) / MR * MR;
}

size_t segd_wino_weights_floats(int cin, int cout)
{
    return (size_t)36 * segd_wino_cout_pad(cout) * cin;
}

/* G g G^T of one 3x3 kernel g (9), in double: out (36) indexed i*6 + j. */
static void wino_kernel(float out[36], const float *g)
{
    static const double G[6][3] = {{1.0 / 4, 0, 0},
                                   {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                   {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                   {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                   {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                   {0, 0, 1}};
    double t[6][3]; /* G g */
    for (int i = 0; i < 6; i++)
        for (int b = 0; b < 3; b++)
            t[i][b] = G[i][0] * g[b] + G[i][1] * g[3 + b] + G[i][2] * g[6 + b];
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 6; j++)
            out[i * 6 + j] = (float)(t[i][0] * G[j][0] + t[i][1] * G[j][1] + t[i][2] * G[j][2]);
}

void segd_wino_weights(float *u, const float *wt, int cin, int cout)
{
    int cp = segd_wino_cout_pad(cout), ncb = cp / MR;
    memset(u, 0, segd_wino_weights_floats(cin, cout) * sizeof(float));
    for (int o = 0; o < cout; o++)
        for (int c = 0; c < cin; c++) {
            float v[36];
            wino_kernel(v, wt + ((size_t)o * cin + c) * 9);
            for (int xi = 0; xi < 36; xi++) /* u: (36, ncb, cin, MR) */
                u[(((size_t)xi * ncb + o / MR) * cin + c) * MR + o % MR] = v[xi];
        }
}

size_t segd_wino_weights_bf16_elems(int cin, int cout)
{
    return segd_gemm_bf16_a_elems(36 * (segd_wino_cout_pad(cout) / MR), cin);
}

void segd_wino_weights_bf16(uint16_t *ub, const float *u, int cin, int cout)
{
    /* u's (36, ncb) panels of (cin, MR) are the packed A of 36 * ncb blocks */
    segd_gemm_bf16_pack_a(ub, u, 36 * (segd_wino_cout_pad(cout) / MR), cin);
}

void segd_wino_weights_rows(float *ur, const float *wt, int cin, int cout)
{
    for (int o = 0; o < cout; o++)
        for (int c = 0; c < cin; c++) {
            float v[36];
            wino_kernel(v, wt + ((size_t)o * cin + c) * 9);
            for (int xi = 0; xi < 36; xi++) /* ur: (36, cout, cin) */
                ur[((size_t)xi * cout + o) * cin + c] = v[xi];
        }
}

/* t rounded up to a multiple of nr. */
static size_t pad_nr(size_t t, int nr)
{
    return (t + nr - 1) / nr * nr;
}

/* The AVX-512 input transform (16 tiles at a time) where the isa has it
 * and a tile row holds more than 8 tiles; narrower maps (32 pixels and
 * less: the deepest levels) take the AVX2 one, 8 at a time, which pads a
 * 4-tile row to 8 lanes instead of 16.  Both give the same V bit for bit. */
static int wide_group(int w, int isa)
{
    return isa >= SEGD_ISA_AVX512 && (w + 3) / 4 > 8;
}

int segd_wino_tiles_x(int w, int isa)
{
    int g = wide_group(w, isa) ? 16 : 8;
    return ((w + 3) / 4 + g - 1) / g * g;
}

size_t segd_wino_band_floats(int cin, int cout, int rows, int w)
{
    /* the widest kernel's padding: enough for every isa */
    size_t tp = pad_nr((size_t)rows * segd_wino_tiles_x(w, SEGD_ISA_AVX512), SEGD_GEMM_NR_MAX);
    /* V (36, T/nr, cin, nr) + M (36, cout_pad, T) + D and E (36, T) each */
    return 36 * tp * ((size_t)cin + segd_wino_cout_pad(cout) + 2);
}

/* ----------------------------------------------------------- transforms */

/* 1D input transform BT (6x6) applied across n tiles: out[i][t] from in[r][t],
 * rows strided by ld. */
VEC_CLONES static void bt_rows(float *restrict out, const float *restrict in, size_t ld, int n)
{
    const float *d0 = in, *d1 = in + ld, *d2 = in + 2 * ld, *d3 = in + 3 * ld, *d4 = in + 4 * ld,
                *d5 = in + 5 * ld;
    float *o0 = out, *o1 = out + ld, *o2 = out + 2 * ld, *o3 = out + 3 * ld, *o4 = out + 4 * ld,
          *o5 = out + 5 * ld;
    for (int t = 0; t < n; t++) {
        float a = d0[t], b = d1[t], c = d2[t], d = d3[t], e = d4[t], f = d5[t];
        o0[t] = 4.0f * a - 5.0f * c + e;
        o1[t] = -4.0f * (b + c) + (d + e);
        o2[t] = 4.0f * (b - c) + (e - d);
        o3[t] = 2.0f * (d - b) + (e - c);
        o4[t] = 2.0f * (b - d) + (e - c);
        o5[t] = 4.0f * b - 5.0f * d + f;
    }
}

/* Gather the 6x6 input patches of tile row ty (tiles t0.. of the band) of one
 * channel into D (36, tp) rows: D[r*6+s][t0+tx] = in(4ty-1+r, 4tx-1+s). */
static void gather_row(float *D, size_t tp, int t0, const float *const rows[6], int w, int tx_n,
                       int txp)
{
    for (int r = 0; r < 6; r++) {
        const float *src = rows[r];
        for (int s = 0; s < 6; s++) {
            float *d = D + (size_t)(r * 6 + s) * tp + t0;
            memset(d + tx_n, 0, sizeof(float) * (txp - tx_n));
            if (!src) {
                memset(d, 0, sizeof(float) * tx_n);
                continue;
            }
            int tx = 0;
            /* x = 4tx - 1 + s; x < 0 only for tx = 0, s = 0 */
            if (s == 0) {
                d[0] = 0.0f;
                tx = 1;
            }
            /* largest tx with x = 4tx-1+s <= w-1 is floor((w - s) / 4) */
            int last = w - s >= 0 ? (w - s) / 4 : -1;
            if (last > tx_n - 1)
                last = tx_n - 1;
            for (; tx <= last; tx++)
                d[tx] = src[4 * tx - 1 + s];
            for (; tx < tx_n; tx++)
                d[tx] = 0.0f;
        }
    }
}

/* V[xi][tb][c][lane] (nr lanes) from the transformed patches E (36, tp). */
VEC_CLONES static void pack_v(float *restrict V, const float *restrict E, size_t tp, int cin, int c,
                              int nr)
{
    size_t ntb = tp / nr;
    for (int xi = 0; xi < 36; xi++) {
        const float *e = E + (size_t)xi * tp;
        float *v = V + ((size_t)xi * ntb * cin + c) * nr;
        for (size_t tb = 0; tb < ntb; tb++)
            memcpy(v + tb * (size_t)cin * nr, e + tb * nr, sizeof(float) * nr);
    }
}

/* Output transform of one output channel: O[p*4+q][t] = AT m A from
 * m[i*6+j][t] = M rows (stride ld), + bias, ReLU. */
VEC_CLONES static void at_rows(float *restrict out, size_t old, const float *restrict in, size_t ld,
                               int n)
{
    const float *m0 = in, *m1 = in + ld, *m2 = in + 2 * ld, *m3 = in + 3 * ld, *m4 = in + 4 * ld,
                *m5 = in + 5 * ld;
    float *o0 = out, *o1 = out + old, *o2 = out + 2 * old, *o3 = out + 3 * old;
    for (int t = 0; t < n; t++) {
        float a = m0[t], b = m1[t], c = m2[t], d = m3[t], e = m4[t], f = m5[t];
        float s1 = b + c, d1 = b - c, s2 = d + e, d2 = d - e;
        o0[t] = a + s1 + s2;
        o1[t] = d1 + 2.0f * d2;
        o2[t] = s1 + 4.0f * s2;
        o3[t] = d1 + 8.0f * d2 + f;
    }
}

#if SEGD_X86
/* out[s][k] = p[4k + s] for k < 8, s < 4 (8 tiles' 4 column phases). */
__attribute__((target("avx2,fma"))) static inline void phases8(const float *p, __m256 out[4])
{
    __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8), c = _mm256_loadu_ps(p + 16),
           d = _mm256_loadu_ps(p + 24);
    __m256 e0 = _mm256_permute2f128_ps(a, c, 0x20), e1 = _mm256_permute2f128_ps(a, c, 0x31),
           e2 = _mm256_permute2f128_ps(b, d, 0x20), e3 = _mm256_permute2f128_ps(b, d, 0x31);
    __m256 t0 = _mm256_unpacklo_ps(e0, e1), t1 = _mm256_unpackhi_ps(e0, e1),
           t2 = _mm256_unpacklo_ps(e2, e3), t3 = _mm256_unpackhi_ps(e2, e3);
    out[0] = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    out[1] = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    out[2] = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    out[3] = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
}

/* Input transform of one channel, tile row by tile row, 8 tiles at a time:
 * BT over the 6 input rows on whole rows, then BT over columns on the 8
 * tiles' column phases; results stored straight into V, where tile t of
 * channel c at Winograd point xi is V[xi * xs + c * cs + (t / nr) * bs + t % nr]
 * (panels: cs = nr, bs = cin * nr; rows: cs = tp, bs = nr).
 * Over 80 lines on purpose: the row and the column pass are one loop nest
 * over the same 8 tiles and their registers, and read best checked as a
 * whole against the scalar transform. */
__attribute__((target("avx2,fma"))) static void wino_in_avx2(
    float *V, size_t xs, size_t cs, size_t bs, int nr, int c, const float *plane, int in_r0,
    int h, int w, int ty0, int ty1, int txp, float *buf)
{
    const __m256 k2 = _mm256_set1_ps(2.0f), k4 = _mm256_set1_ps(4.0f), k5 = _mm256_set1_ps(5.0f);
    const __m256i shift1 = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7);
    size_t lr = (size_t)4 * txp + 40; /* row buffer: x = -1 at index 0 */
    for (int ty = ty0; ty < ty1; ty++) {
        const float *rows[6];
        for (int r = 0; r < 6; r++) {
            int y = 4 * ty - 1 + r;
            rows[r] = (y < 0 || y >= h) ? NULL : plane + (size_t)(y - in_r0) * w;
        }
        /* R_i[x] = sum_r BT[i][r] row_r[x] into buf + i*lr + 1 */
        for (int i = 0; i < 6; i++) {
            buf[i * lr] = 0.0f;
            memset(buf + i * lr + 1 + w, 0, sizeof(float) * (lr - 1 - w));
        }
        static const float zero8[8];
        int x = 0;
        for (; x < w; x += 8) {
            int n = w - x < 8 ? w - x : 8;
            __m256 d[6];
            for (int r = 0; r < 6; r++) {
                if (!rows[r])
                    d[r] = _mm256_setzero_ps();
                else if (n == 8)
                    d[r] = _mm256_loadu_ps(rows[r] + x);
                else {
                    float t[8];
                    memcpy(t, zero8, sizeof t);
                    memcpy(t, rows[r] + x, sizeof(float) * n);
                    d[r] = _mm256_loadu_ps(t);
                }
            }
            __m256 o[6];
            o[0] = _mm256_add_ps(_mm256_fmsub_ps(k4, d[0], _mm256_mul_ps(k5, d[2])), d[4]);
            o[1] = _mm256_fnmadd_ps(k4, _mm256_add_ps(d[1], d[2]), _mm256_add_ps(d[3], d[4]));
            o[2] = _mm256_fmadd_ps(k4, _mm256_sub_ps(d[1], d[2]), _mm256_sub_ps(d[4], d[3]));
            o[3] = _mm256_fmadd_ps(k2, _mm256_sub_ps(d[3], d[1]), _mm256_sub_ps(d[4], d[2]));
            o[4] = _mm256_fmadd_ps(k2, _mm256_sub_ps(d[1], d[3]), _mm256_sub_ps(d[4], d[2]));
            o[5] = _mm256_add_ps(_mm256_fmsub_ps(k4, d[1], _mm256_mul_ps(k5, d[3])), d[5]);
            for (int i = 0; i < 6; i++) {
                if (n == 8) {
                    _mm256_storeu_ps(buf + i * lr + 1 + x, o[i]);
                } else {
                    float t[8];
                    _mm256_storeu_ps(t, o[i]);
                    memcpy(buf + i * lr + 1 + x, t, sizeof(float) * n);
                }
            }
        }
        /* columns: tile k of a group reads R_i at 4(tx0+k)-1+s = index 4(tx0+k)+s */
        size_t t0 = (size_t)(ty - ty0) * txp;
        for (int g = 0; g < txp; g += 8) {
            size_t t = t0 + g;
            float *vt = V + (size_t)c * cs + (t / nr) * bs + t % nr;
            for (int i = 0; i < 6; i++) {
                __m256 p[4];
                const float *bi = buf + i * lr + 4 * g;
                phases8(bi, p);
                /* phases 4 and 5 are phases 0 and 1 of the next tile */
                __m256 e = _mm256_blend_ps(_mm256_permutevar8x32_ps(p[0], shift1),
                                           _mm256_broadcast_ss(bi + 32), 0x80);
                __m256 f = _mm256_blend_ps(_mm256_permutevar8x32_ps(p[1], shift1),
                                           _mm256_broadcast_ss(bi + 33), 0x80);
                __m256 a = p[0], b = p[1], cc = p[2], d = p[3];
                __m256 o0 = _mm256_add_ps(_mm256_fmsub_ps(k4, a, _mm256_mul_ps(k5, cc)), e);
                __m256 o1 = _mm256_fnmadd_ps(k4, _mm256_add_ps(b, cc), _mm256_add_ps(d, e));
                __m256 o2 = _mm256_fmadd_ps(k4, _mm256_sub_ps(b, cc), _mm256_sub_ps(e, d));
                __m256 o3 = _mm256_fmadd_ps(k2, _mm256_sub_ps(d, b), _mm256_sub_ps(e, cc));
                __m256 o4 = _mm256_fmadd_ps(k2, _mm256_sub_ps(b, d), _mm256_sub_ps(e, cc));
                __m256 o5 = _mm256_add_ps(_mm256_fmsub_ps(k4, b, _mm256_mul_ps(k5, d)), f);
                float *v = vt + (size_t)(i * 6) * xs;
                _mm256_store_ps(v, o0);
                _mm256_store_ps(v + xs, o1);
                _mm256_store_ps(v + 2 * xs, o2);
                _mm256_store_ps(v + 3 * xs, o3);
                _mm256_store_ps(v + 4 * xs, o4);
                _mm256_store_ps(v + 5 * xs, o5);
            }
        }
    }
}

/* AT (4x6) applied to six vectors. */
#define AT6(m0, m1, m2, m3, m4, m5, o0, o1, o2, o3)                                       \
    do {                                                                                  \
        __m256 s1_ = _mm256_add_ps(m1, m2), d1_ = _mm256_sub_ps(m1, m2);                  \
        __m256 s2_ = _mm256_add_ps(m3, m4), d2_ = _mm256_sub_ps(m3, m4);                  \
        o0 = _mm256_add_ps(_mm256_add_ps(m0, s1_), s2_);                                  \
        o1 = _mm256_fmadd_ps(k2, d2_, d1_);                                               \
        o2 = _mm256_fmadd_ps(k4, s2_, s1_);                                               \
        o3 = _mm256_add_ps(_mm256_fmadd_ps(k8, d2_, d1_), m5);                            \
    } while (0)

/* Output transform of one output channel, 8 tiles at a time, with bias and
 * ReLU; 4x4 blocks interleaved back into rows. */
__attribute__((target("avx2,fma"))) static void wino_out_avx2(
    float *op, const float *m, size_t ms, float bias, int relu, int h, int w, int ty0, int ty1,
    int txp)
{
    const __m256 k2 = _mm256_set1_ps(2.0f), k4 = _mm256_set1_ps(4.0f), k8 = _mm256_set1_ps(8.0f);
    const __m256 vb = _mm256_set1_ps(bias), z = _mm256_setzero_ps();
    int tx_n = (w + 3) / 4;
    for (int ty = ty0; ty < ty1; ty++) {
        size_t t0 = (size_t)(ty - ty0) * txp;
        for (int g = 0; g < tx_n; g += 8) {
            const float *mp = m + t0 + g;
            __m256 e[4][6]; /* AT over i, for each j */
            for (int j = 0; j < 6; j++) {
                __m256 a = _mm256_loadu_ps(mp + (size_t)j * ms),
                       b = _mm256_loadu_ps(mp + (size_t)(6 + j) * ms),
                       c = _mm256_loadu_ps(mp + (size_t)(12 + j) * ms),
                       d = _mm256_loadu_ps(mp + (size_t)(18 + j) * ms),
                       ee = _mm256_loadu_ps(mp + (size_t)(24 + j) * ms),
                       f = _mm256_loadu_ps(mp + (size_t)(30 + j) * ms);
                AT6(a, b, c, d, ee, f, e[0][j], e[1][j], e[2][j], e[3][j]);
            }
            for (int p = 0; p < 4; p++) {
                int y = 4 * ty + p;
                if (y >= h)
                    break;
                __m256 o[4];
                AT6(e[p][0], e[p][1], e[p][2], e[p][3], e[p][4], e[p][5], o[0], o[1], o[2], o[3]);
                for (int q = 0; q < 4; q++) {
                    o[q] = _mm256_add_ps(o[q], vb);
                    if (relu)
                        o[q] = _mm256_max_ps(o[q], z);
                }
                /* (q, k) -> (k, q): 8 tiles x 4 columns = 32 consecutive floats */
                __m256 t0v = _mm256_unpacklo_ps(o[0], o[1]), t1v = _mm256_unpackhi_ps(o[0], o[1]),
                       t2v = _mm256_unpacklo_ps(o[2], o[3]), t3v = _mm256_unpackhi_ps(o[2], o[3]);
                __m256 u0 = _mm256_shuffle_ps(t0v, t2v, _MM_SHUFFLE(1, 0, 1, 0)),
                       u1 = _mm256_shuffle_ps(t0v, t2v, _MM_SHUFFLE(3, 2, 3, 2)),
                       u2 = _mm256_shuffle_ps(t1v, t3v, _MM_SHUFFLE(1, 0, 1, 0)),
                       u3 = _mm256_shuffle_ps(t1v, t3v, _MM_SHUFFLE(3, 2, 3, 2));
                __m256 r0 = _mm256_permute2f128_ps(u0, u1, 0x20),
                       r1 = _mm256_permute2f128_ps(u2, u3, 0x20),
                       r2 = _mm256_permute2f128_ps(u0, u1, 0x31),
                       r3 = _mm256_permute2f128_ps(u2, u3, 0x31);
                float *row = op + (size_t)y * w + 4 * g;
                int n = w - 4 * g; /* columns left in this row */
                if (n >= 32) {
                    _mm256_storeu_ps(row, r0);
                    _mm256_storeu_ps(row + 8, r1);
                    _mm256_storeu_ps(row + 16, r2);
                    _mm256_storeu_ps(row + 24, r3);
                } else {
                    float t[32];
                    _mm256_storeu_ps(t, r0);
                    _mm256_storeu_ps(t + 8, r1);
                    _mm256_storeu_ps(t + 16, r2);
                    _mm256_storeu_ps(t + 24, r3);
                    memcpy(row, t, sizeof(float) * n);
                }
            }
        }
    }
}
#endif

/* ----------------------------------------------------------------- band */

/* V[xi] (cin, tp) row-major from D (36, tp): the layout cblas_sgemm reads. */
static void pack_v_rows(float *restrict V, const float *restrict D, size_t tp, int cin, int c,
                        int nt)
{
    for (int xi = 0; xi < 36; xi++)
        memcpy(V + ((size_t)xi * cin + c) * tp, D + (size_t)xi * tp, sizeof(float) * nt);
}

/* segd_wino_band (blas = 0: u packed, micro-kernel) and segd_wino_band_blas
 * (blas = 1: u row-major (36, cout, cin), V row-major, cblas_sgemm over the
 * nt real tiles only; padding lanes are never written nor read).
 * Over 80 lines on purpose: the scratch layout (V, M, D, E), the tile
 * loops and the GEMM dispatch of both backends share a dozen strides that
 * pieces would have to pass around; the phases are commented in place. */
static void wino_band(float *out, size_t out_cs, const float *inp, size_t in_cs, int in_r0,
                      int in_r1, int h, int w, int ty0, int ty1, const float *u,
                      const float *bias, int cin, int cout, int oc0, int oc1, int relu,
                      float *scratch, int isa, int blas, const uint16_t *ub)
{
    int tx_n = (w + 3) / 4, txp = segd_wino_tiles_x(w, isa);
    int nt = (ty1 - ty0) * txp;
    int avx2 = isa >= SEGD_ISA_AVX2, nr = segd_gemm_nr(isa); /* AVX-512: AVX2 transforms */
    size_t tp = pad_nr((size_t)nt, nr), ntb = tp / nr;
    int cp = segd_wino_cout_pad(cout), ncb = cp / MR;
    int cb0 = oc0 / MR, cb1 = (oc1 + MR - 1) / MR; /* the output channels' row blocks */
    float *V = scratch, *M = V + 36 * tp * cin, *D = M + 36 * tp * cp, *E = D + 36 * tp;
    segd_gemm_micro_fn kern = segd_gemm_micro(isa);
    assert(!ub || (!blas && isa >= SEGD_ISA_AVX512 && nr == SEGD_GEMM_NR_MAX &&
                   segd_gemm_micro_bf16));
    assert(oc0 % MR == 0 && 0 <= oc0 && oc0 < oc1 && oc1 <= cout);
    assert(in_r0 <= (4 * ty0 - 1 > 0 ? 4 * ty0 - 1 : 0));
    assert(in_r1 >= (4 * ty1 + 1 < h ? 4 * ty1 + 1 : h));

    /* Input transform, channel by channel. */
#if SEGD_X86
    if (avx2) {
        if (!blas && tp > (size_t)nt) /* lanes past the last tile (all in the last block): zero */
            for (int xi = 0; xi < 36; xi++)
                for (int c = 0; c < cin; c++)
                    memset(V + (((size_t)xi * ntb + ntb - 1) * cin + c) * nr + nt % nr, 0,
                           sizeof(float) * (tp - nt));
        size_t cs = blas ? tp : (size_t)nr, bs = blas ? (size_t)nr : (size_t)cin * nr;
        for (int c = 0; c < cin; c++)
            if (wide_group(w, isa))
                segd_wino_in_avx512(V, tp * cin, cs, bs, nr, c, inp + (size_t)c * in_cs, in_r0,
                                    h, w, ty0, ty1, txp, D);
            else
                wino_in_avx2(V, tp * cin, cs, bs, nr, c, inp + (size_t)c * in_cs, in_r0, h, w,
                             ty0, ty1, txp, D);
    }
#endif
    if (tp > (size_t)nt)
        for (int k = 0; k < 36; k++)
            memset(D + k * tp + nt, 0, sizeof(float) * (tp - nt));
    for (int c = 0; c < cin && !avx2; c++) {
        const float *plane = inp + (size_t)c * in_cs;
        for (int ty = ty0; ty < ty1; ty++) {
            const float *rows[6];
            for (int r = 0; r < 6; r++) {
                int y = 4 * ty - 1 + r;
                rows[r] = (y < 0 || y >= h) ? NULL : plane + (size_t)(y - in_r0) * w;
            }
            gather_row(D, tp, (ty - ty0) * txp, rows, w, tx_n, txp);
        }
        /* rows of patch: D[r*6+s]; first BT over r (stride 6 rows), then over s */
        for (int s = 0; s < 6; s++)
            bt_rows(E + s * tp, D + s * tp, 6 * tp, (int)tp);
        for (int i = 0; i < 6; i++)
            bt_rows(D + (size_t)i * 6 * tp, E + (size_t)i * 6 * tp, tp, (int)tp);
        if (blas)
            pack_v_rows(V, D, tp, cin, c, nt);
        else
            pack_v(V, D, tp, cin, c, nr);
    }

    /* bf16: each V panel (cin, nr) turned in place into its bf16 pairs
     * (ceil(cin/2), nr, 2), at the start of the panel's own storage: no
     * scratch beyond the fp32 plan's, and the panel is still in cache from
     * the input transform. */
    for (size_t pb = 0; ub && pb < 36 * ntb; pb++)
        segd_gemm_bf16_pack_b(V + pb * cin * nr, cin);

    /* 36 GEMMs: M[xi] (cp, tp) = U[xi] (cp, cin) x V[xi] (cin, tp). */
    size_t kh = (size_t)(cin + 1) / 2;
    for (int xi = 0; xi < 36 && ub; xi++) {
        /* ub: (36, ncb, kh, MR, 2); V panels: (kh, nr, 2) bf16 each */
        const uint16_t *ux = ub + (size_t)xi * ncb * kh * MR * 2;
        const float *vx = V + (size_t)xi * ntb * cin * nr;
        float *mx = M + (size_t)xi * cp * tp;
        for (size_t tb = 0; tb < ntb; tb++)
            for (int cb = cb0; cb < cb1; cb++)
                segd_gemm_micro_bf16(cin, ux + (size_t)cb * kh * MR * 2,
                                     (const uint16_t *)(const void *)(vx + tb * cin * nr),
                                     mx + (size_t)cb * MR * tp + tb * nr, tp);
    }
    for (int xi = 0; xi < 36 && blas; xi++) /* rows outside [oc0, oc1) of M, columns nt.. unused */
        segd_gemm_blas(M + ((size_t)xi * cp + oc0) * tp, tp, u + ((size_t)xi * cout + oc0) * cin,
                       oc1 - oc0, cin, V + (size_t)xi * cin * tp, tp, nt);
    for (int xi = 0; xi < 36 && !blas && !ub; xi++) {
        const float *ux = u + (size_t)xi * ncb * cin * MR;
        const float *vx = V + (size_t)xi * ntb * cin * nr;
        float *mx = M + (size_t)xi * cp * tp;
        for (size_t tb = 0; tb < ntb; tb++)
            for (int cb = cb0; cb < cb1; cb++)
                kern(cin, ux + (size_t)cb * cin * MR, vx + tb * cin * nr,
                     mx + (size_t)cb * MR * tp + tb * nr, tp);
    }

    /* Output transform per output channel, scatter 4x4 blocks. */
#if SEGD_X86
    if (avx2) {
        for (int o = oc0; o < oc1; o++)
            wino_out_avx2(out + (size_t)o * out_cs, M + (size_t)o * tp, (size_t)cp * tp, bias[o],
                          relu, h, w, ty0, ty1, txp);
        return;
    }
#endif
    for (int o = oc0; o < oc1; o++) {
        const float *m = M + (size_t)o * tp; /* m[xi] at stride cp*tp */
        size_t ms = (size_t)cp * tp;
        /* AT over i: E[p*6+j] = sum_i AT[p][i] m[i*6+j] */
        for (int j = 0; j < 6; j++)
            at_rows(E + j * tp, 6 * tp, m + j * ms, 6 * ms, nt);
        /* AT over j: D[p*4+q] = sum_j AT[q][j] E[p*6+j] */
        for (int p = 0; p < 4; p++)
            at_rows(D + (size_t)p * 4 * tp, tp, E + (size_t)p * 6 * tp, tp, nt);
        for (int k = 0; k < 16; k++)
            segd_bias_act(D + k * tp, nt, bias[o], relu);
        float *op = out + (size_t)o * out_cs;
        for (int ty = ty0; ty < ty1; ty++) {
            int t0 = (ty - ty0) * txp;
            for (int p = 0; p < 4; p++) {
                int y = 4 * ty + p;
                if (y >= h)
                    break;
                float *row = op + (size_t)y * w;
                for (int q = 0; q < 4; q++) {
                    const float *src = D + (size_t)(p * 4 + q) * tp + t0;
                    int tx = 0;
                    for (; tx < tx_n - 1; tx++)
                        row[4 * tx + q] = src[tx];
                    if (4 * tx + q < w)
                        row[4 * tx + q] = src[tx];
                }
            }
        }
    }
}

void segd_wino_band(float *out, size_t out_cs, const float *inp, size_t in_cs, int in_r0,
                    int in_r1, int h, int w, int ty0, int ty1, const float *u,
                    const float *bias, int cin, int cout, int oc0, int oc1, int relu,
                    float *scratch, int isa)
{
    wino_band(out, out_cs, inp, in_cs, in_r0, in_r1, h, w, ty0, ty1, u, bias, cin, cout, oc0, oc1,
              relu, scratch, isa, 0, NULL);
}

void segd_wino_band_bf16(float *out, size_t out_cs, const float *inp, size_t in_cs, int in_r0,
                         int in_r1, int h, int w, int ty0, int ty1, const uint16_t *ub,
                         const float *bias, int cin, int cout, int oc0, int oc1, int relu,
                         float *scratch)
{
    wino_band(out, out_cs, inp, in_cs, in_r0, in_r1, h, w, ty0, ty1, NULL, bias, cin, cout, oc0,
              oc1, relu, scratch, SEGD_ISA_AVX512, 0, ub);
}

void segd_wino_band_blas(float *out, size_t out_cs, const float *inp, size_t in_cs, int in_r0,
                         int in_r1, int h, int w, int ty0, int ty1, const float *ur,
                         const float *bias, int cin, int cout, int oc0, int oc1, int relu,
                         float *scratch, int isa)
{
    wino_band(out, out_cs, inp, in_cs, in_r0, in_r1, h, w, ty0, ty1, ur, bias, cin, cout, oc0, oc1,
              relu, scratch, isa, 1, NULL);
}
