/* The AVX-512 input transform of the Winograd bands (segd_wino_band at
 * SEGD_ISA_AVX512): the AVX2 transform of winograd.c on 16 tiles at a
 * time, with masked loads and stores for the row ends.  Built for AVX-512
 * through target attributes only, as gemm_avx512.c. */
#include <stddef.h>
#include <string.h>

#include "model/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

/* out[s][k] = p[4k + s] for k < 16, s < 4: the 4 column phases of 16 tiles
 * (64 consecutive floats), each half of 8 tiles gathered from 32 floats. */
__attribute__((target("avx512f,avx512dq"))) static inline void phases16(const float *p,
                                                                        __m512 out[4])
{
    __m512 a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 16), c = _mm512_loadu_ps(p + 32),
           d = _mm512_loadu_ps(p + 48);
    for (int s = 0; s < 4; s++) {
        const __m512i idx = _mm512_setr_epi32(s, 4 + s, 8 + s, 12 + s, 16 + s, 20 + s, 24 + s,
                                              28 + s, s, 4 + s, 8 + s, 12 + s, 16 + s, 20 + s,
                                              24 + s, 28 + s);
        __m512 lo = _mm512_permutex2var_ps(a, idx, b), hi = _mm512_permutex2var_ps(c, idx, d);
        out[s] = _mm512_shuffle_f32x4(lo, hi, _MM_SHUFFLE(1, 0, 1, 0));
    }
}

/* v shifted down one lane, next in the last: phases 4 and 5 of 16 tiles are
 * phases 0 and 1 of the tile after each. */
__attribute__((target("avx512f,avx512dq"))) static inline __m512 next_tile(__m512 v, float next)
{
    return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(_mm512_set1_ps(next)),
                                                   _mm512_castps_si512(v), 1));
}

/* Over 80 lines on purpose, as wino_in_avx2: the row and the column pass
 * are one loop nest over the same 16 tiles, read best against the scalar
 * transform as a whole.  Same operations in the same order as the AVX2
 * transform, so both give bit-identical V. */
__attribute__((target("avx512f,avx512dq,fma"))) void segd_wino_in_avx512(
    float *V, size_t xs, size_t cs, size_t bs, int nr, int c, const float *plane, int in_r0,
    int h, int w, int ty0, int ty1, int txp, float *buf)
{
    const __m512 k2 = _mm512_set1_ps(2.0f), k4 = _mm512_set1_ps(4.0f), k5 = _mm512_set1_ps(5.0f);
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
        for (int x = 0; x < w; x += 16) {
            int n = w - x < 16 ? w - x : 16;
            __mmask16 m = (__mmask16)(n == 16 ? 0xffffu : (1u << n) - 1u);
            __m512 d[6];
            for (int r = 0; r < 6; r++)
                d[r] = rows[r] ? _mm512_maskz_loadu_ps(m, rows[r] + x) : _mm512_setzero_ps();
            __m512 o[6];
            o[0] = _mm512_add_ps(_mm512_fmsub_ps(k4, d[0], _mm512_mul_ps(k5, d[2])), d[4]);
            o[1] = _mm512_fnmadd_ps(k4, _mm512_add_ps(d[1], d[2]), _mm512_add_ps(d[3], d[4]));
            o[2] = _mm512_fmadd_ps(k4, _mm512_sub_ps(d[1], d[2]), _mm512_sub_ps(d[4], d[3]));
            o[3] = _mm512_fmadd_ps(k2, _mm512_sub_ps(d[3], d[1]), _mm512_sub_ps(d[4], d[2]));
            o[4] = _mm512_fmadd_ps(k2, _mm512_sub_ps(d[1], d[3]), _mm512_sub_ps(d[4], d[2]));
            o[5] = _mm512_add_ps(_mm512_fmsub_ps(k4, d[1], _mm512_mul_ps(k5, d[3])), d[5]);
            for (int i = 0; i < 6; i++)
                _mm512_mask_storeu_ps(buf + i * lr + 1 + x, m, o[i]);
        }
        /* columns: tile k of a group reads R_i at 4(tx0+k)-1+s = index 4(tx0+k)+s */
        size_t t0 = (size_t)(ty - ty0) * txp;
        for (int g = 0; g < txp; g += 16) {
            size_t t = t0 + g;
            float *vt = V + (size_t)c * cs + (t / (size_t)nr) * bs + t % (size_t)nr;
            for (int i = 0; i < 6; i++) {
                __m512 p[4];
                const float *bi = buf + i * lr + 4 * g;
                phases16(bi, p);
                __m512 e = next_tile(p[0], bi[64]), f = next_tile(p[1], bi[65]);
                __m512 a = p[0], b = p[1], cc = p[2], d = p[3];
                __m512 o0 = _mm512_add_ps(_mm512_fmsub_ps(k4, a, _mm512_mul_ps(k5, cc)), e);
                __m512 o1 = _mm512_fnmadd_ps(k4, _mm512_add_ps(b, cc), _mm512_add_ps(d, e));
                __m512 o2 = _mm512_fmadd_ps(k4, _mm512_sub_ps(b, cc), _mm512_sub_ps(e, d));
                __m512 o3 = _mm512_fmadd_ps(k2, _mm512_sub_ps(d, b), _mm512_sub_ps(e, cc));
                __m512 o4 = _mm512_fmadd_ps(k2, _mm512_sub_ps(b, d), _mm512_sub_ps(e, cc));
                __m512 o5 = _mm512_add_ps(_mm512_fmsub_ps(k4, b, _mm512_mul_ps(k5, d)), f);
                float *v = vt + (size_t)(i * 6) * xs;
                _mm512_storeu_ps(v, o0);
                _mm512_storeu_ps(v + xs, o1);
                _mm512_storeu_ps(v + 2 * xs, o2);
                _mm512_storeu_ps(v + 3 * xs, o3);
                _mm512_storeu_ps(v + 4 * xs, o4);
                _mm512_storeu_ps(v + 5 * xs, o5);
            }
        }
    }
}
#endif
