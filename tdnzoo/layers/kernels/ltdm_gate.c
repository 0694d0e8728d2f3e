/*
 * The L-TDM's full-resolution inference work in one pass over memory (see tdnzoo/layers/_native.py).
 *
 * For each frame n and channel c, with the [2, C, K1] expand weights W (the second direction
 * already negated, its bias as a last input channel of ones) and the [2, N, K1, HW] mixed maps m:
 *     f = W[0, c] . m[0, n],  g = W[1, c] . m[1, n]      (the two directions' logits)
 *     y = x + 0.5 * x * (sigmoid(f) - sigmoid(g))          (the L-TDM output)
 * then, when tw ([C, 3]) is given, the temporal conv of y along the T segments of each clip:
 *     out[t] = tw[c, 0] * y[t-1] + tw[c, 1] * y[t] + tw[c, 2] * y[t+1]   (zero padded)
 * The logits never reach memory: the PyTorch ops write both [N, C, HW] logit maps, read them
 * back for the sigmoids, the gate and the temporal conv, a dozen full-size passes in all.
 *
 * Written with GCC vector extensions (16 floats: one AVX-512 register, two AVX2 ones) so the
 * compiler vectorises for the machine it is built on; parallel with OpenMP over (clip, channel
 * block), on the PyTorch thread count passed in.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

#define PIXELS 32         /* pixels per register block: two v16 */
#define CHANNEL_BLOCK 32  /* channels per parallel work item (measured best of 2, 8, 32) */

static inline v16 splat(float a) { return (v16){} + a; }

/* mask ? a : b, lane-wise; a NaN in b survives (comparisons with NaN are false) */
static inline v16 where(v16i mask, v16 a, v16 b) { return (v16)((mask & (v16i)a) | (~mask & (v16i)b)); }

/* exp(x): Cephes' single-precision range reduction and polynomial, about 1 ulp */
static inline v16 vexp(v16 x) {
    const float limit = 88.3762626647949f;
    x = where(x > limit, splat(limit), x);
    x = where(x < -limit, splat(-limit), x);
    v16 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(x / ln 2) */
    v16 r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    v16 p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    v16i e = (__builtin_convertvector(n, v16i) + 127) << 23; /* 2^n */
    return p * (v16)e;
}

static inline v16 vsigmoid(v16 z) { return 1.0f / (1.0f + vexp(-z)); }

/* the n <= PIXELS floats at src as two v16, zero padded */
static inline void load_block(v16 *lo, v16 *hi, const float *src, int64_t n) {
    if (n == PIXELS) {
        memcpy(lo, src, sizeof *lo);
        memcpy(hi, src + 16, sizeof *hi);
        return;
    }
    float tmp[PIXELS] = {0};
    memcpy(tmp, src, sizeof(float) * n);
    memcpy(lo, tmp, sizeof *lo);
    memcpy(hi, tmp + 16, sizeof *hi);
}

static inline void store_block(float *dst, v16 lo, v16 hi, int64_t n) {
    if (n == PIXELS) {
        memcpy(dst, &lo, sizeof lo);
        memcpy(dst + 16, &hi, sizeof hi);
        return;
    }
    float tmp[PIXELS];
    memcpy(tmp, &lo, sizeof lo);
    memcpy(tmp + 16, &hi, sizeof hi);
    memcpy(dst, tmp, sizeof(float) * n);
}

/* y for channels c (and c + 1 when pair) of one frame, over one block of pixels */
static inline void gate_block(const v16 (*mixed)[2], int64_t k1, const float *wf, const float *wg,
                              int64_t stride_w, int pair, const float *x, float *y, int64_t hw, int64_t n) {
    const float *wf1 = pair ? wf + stride_w : wf, *wg1 = pair ? wg + stride_w : wg;
    v16 f0 = {}, f1 = {}, g0 = {}, g1 = {}, f2 = {}, f3 = {}, g2 = {}, g3 = {};
    for (int64_t k = 0; k < k1; k++) {
        v16 ma = mixed[k][0], mb = mixed[k][1], na = mixed[k1 + k][0], nb = mixed[k1 + k][1];
        f0 += wf[k] * ma;  f1 += wf[k] * mb;  g0 += wg[k] * na;  g1 += wg[k] * nb;
        f2 += wf1[k] * ma; f3 += wf1[k] * mb; g2 += wg1[k] * na; g3 += wg1[k] * nb;
    }
    v16 xa, xb;
    load_block(&xa, &xb, x, n);
    v16 ga = vsigmoid(f0) - vsigmoid(g0), gb = vsigmoid(f1) - vsigmoid(g1);
    store_block(y, xa + 0.5f * xa * ga, xb + 0.5f * xb * gb, n);
    if (!pair) return;
    load_block(&xa, &xb, x + hw, n);
    ga = vsigmoid(f2) - vsigmoid(g2);
    gb = vsigmoid(f3) - vsigmoid(g3);
    store_block(y + hw, xa + 0.5f * xa * ga, xb + 0.5f * xb * gb, n);
}

/* in place along time: row[t] <- w0 * row[t-1] + w1 * row[t] + w2 * row[t+1]; prev is scratch */
static void temporal_conv(float *row, int64_t t_len, int64_t stride_t, int64_t hw, const float *w, float *prev) {
    memset(prev, 0, sizeof(float) * hw);
    for (int64_t t = 0; t < t_len; t++, row += stride_t) {
        const float *next = t + 1 < t_len ? row + stride_t : NULL;
        for (int64_t p = 0; p < hw; p++) {
            float cur = row[p];
            row[p] = w[1] * cur + w[0] * prev[p] + (next ? w[2] * next[p] : 0.0f);
            prev[p] = cur;
        }
    }
}

/*
 * x, out: [B, T, C, HW]; m: [2, B*T, K1, HW]; w: [2, C, K1]; tw: [C, 3] or NULL.
 * Returns 0, or -1 when scratch memory could not be allocated.
 */
int tdnzoo_ltdm_gate(const float *x, const float *m, const float *w, const float *tw, float *out, int64_t batch,
                     int64_t t_len, int64_t channels, int64_t k1, int64_t hw, int num_threads) {
    const int64_t blocks = (hw + PIXELS - 1) / PIXELS;
    const int64_t channel_blocks = (channels + CHANNEL_BLOCK - 1) / CHANNEL_BLOCK;
    const int64_t frames = batch * t_len;
    int failed = 0;
#pragma omp parallel for collapse(2) schedule(static) num_threads(num_threads) reduction(|| : failed)
    for (int64_t b = 0; b < batch; b++) {
        for (int64_t cb = 0; cb < channel_blocks; cb++) {
            const int64_t c0 = cb * CHANNEL_BLOCK;
            const int64_t c1 = c0 + CHANNEL_BLOCK < channels ? c0 + CHANNEL_BLOCK : channels;
            v16(*mixed)[2] = aligned_alloc(64, sizeof(v16) * 2 * 2 * k1); /* [direction * k1 + k][2] */
            float *prev = tw ? malloc(sizeof(float) * hw) : NULL;
            if (!mixed || (tw && !prev)) {
                free(mixed);
                free(prev);
                failed = 1;
                continue;
            }
            for (int64_t t = 0; t < t_len; t++) {
                const int64_t frame = b * t_len + t;
                for (int64_t blk = 0; blk < blocks; blk++) {
                    const int64_t p0 = blk * PIXELS, n = hw - p0 < PIXELS ? hw - p0 : PIXELS;
                    for (int64_t dk = 0; dk < 2 * k1; dk++) {
                        const int64_t d = dk / k1, k = dk % k1;
                        load_block(&mixed[dk][0], &mixed[dk][1], m + ((d * frames + frame) * k1 + k) * hw + p0, n);
                    }
                    for (int64_t c = c0; c < c1; c += 2) {
                        const int64_t offset = (frame * channels + c) * hw + p0;
                        gate_block((const v16(*)[2])mixed, k1, w + c * k1, w + (channels + c) * k1, k1, c + 1 < c1,
                                   x + offset, out + offset, hw, n);
                    }
                }
            }
            if (tw)
                for (int64_t c = c0; c < c1; c++)
                    temporal_conv(out + (b * t_len * channels + c) * hw, t_len, channels * hw, hw, tw + 3 * c, prev);
            free(mixed);
            free(prev);
        }
    }
    return failed ? -1 : 0;
}
