/*
 * TDN's CPU kernels (see tdnzoo/layers/_native.py). First the L-TDM's full-resolution part, in inference.
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
 * compiler vectorises for the machine it is built on (three AVX-512 instructions where it has
 * them); parallel with OpenMP on the PyTorch thread count passed in.
 */
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

#define PIXELS 32 /* pixels per register block of the training kernels: two v16 */

static inline v16 splat(float a) { return (v16){} + a; }

/* mask ? a : b, lane-wise */
static inline v16 where(v16i mask, v16 a, v16 b) { return (v16)((mask & (v16i)a) | (~mask & (v16i)b)); }

#ifdef __AVX512F__
#include <immintrin.h>
/* min(limit, x), max(limit, x): x86 returns the second operand when one is NaN, so a NaN survives */
static inline v16 clamp_above(v16 x, float limit) { return (v16)_mm512_min_ps(_mm512_set1_ps(limit), (__m512)x); }
static inline v16 clamp_below(v16 x, float limit) { return (v16)_mm512_max_ps(_mm512_set1_ps(limit), (__m512)x); }
/* p * 2^n, n integral */
static inline v16 scale_pow2(v16 p, v16 n) { return (v16)_mm512_scalef_ps((__m512)p, (__m512)n); }
#else
/* comparisons with NaN are false, so a NaN survives */
static inline v16 clamp_above(v16 x, float limit) { return where(x > limit, splat(limit), x); }
static inline v16 clamp_below(v16 x, float limit) { return where(x < limit, splat(limit), x); }
static inline v16 scale_pow2(v16 p, v16 n) {
    v16i e = (__builtin_convertvector(n, v16i) + 127) << 23; /* 2^n, n within float's exponent range */
    return p * (v16)e;
}
#endif

/* exp(x): Cephes' single-precision range reduction and polynomial, about 1 ulp (with AVX-512,
   min/max clamps and vscalefps: 8 instructions fewer than compare-and-blend and exponent bits) */
static inline v16 vexp_within(v16 x, float limit) {
    x = clamp_below(clamp_above(x, limit), -limit);
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
    return scale_pow2(p, n);
}

/* exp(x) for |x| up to about 88 (float's range), clamped beyond */
static inline v16 vexp(v16 x) { return vexp_within(x, 88.3762626647949f); }

static inline v16 vsigmoid(v16 z) { return 1.0f / (1.0f + vexp(-z)); }

/* the first n floats at src (all 16 when n >= 16) as a v16, zero padded; n <= 0 gives zeros */
static inline v16 load_partial(const float *src, int64_t n) {
    v16 v;
    if (n >= 16) {
        memcpy(&v, src, sizeof v);
        return v;
    }
    float tmp[16] = {0};
    for (int64_t i = 0; i < n; i++) tmp[i] = src[i]; /* n < 16 here */
    memcpy(&v, tmp, sizeof v);
    return v;
}

/* the first n lanes of v to dst (all 16 when n >= 16; none when n <= 0) */
static inline void store_partial(float *dst, v16 v, int64_t n) {
    if (n >= 16) {
        memcpy(dst, &v, sizeof v);
    } else if (n > 0) {
        float tmp[16];
        memcpy(tmp, &v, sizeof tmp);
        memcpy(dst, tmp, sizeof(float) * n);
    }
}

/* the training kernels' blocks of n <= PIXELS floats, as two v16 */
static inline void load_block(v16 *lo, v16 *hi, const float *src, int64_t n) {
    *lo = load_partial(src, n);
    *hi = load_partial(src + 16, n - 16);
}

static inline void store_block(float *dst, v16 lo, v16 hi, int64_t n) {
    store_partial(dst, lo, n);
    store_partial(dst + 16, hi, n - 16);
}

/* ------------------------------------------------------------------------------------------ */
/*
 * The L-TDM's bottleneck part in inference, from x: the reduction b = BN(conv1x1(x)) at K
 * channels (given as the weight W and the folded BN bias), then for direction d (0 forward,
 * 1 backward) and frame n = (clip, t),
 *     diff = conv_neighbor(b)[t + 1] - b[t]   (d = 0; zero at t = T - 1)
 *            conv_neighbor(b)[t - 1] - b[t]   (d = 1; zero at t = 0)
 *     mixed = diff + conv_full(diff) + up(conv_pooled(sum2x2(diff)))
 * with the eval-mode BN (and the pooling's 1/4) folded into conv_full and conv_pooled, and a
 * last channel of ones for the expand's bias: mixed is [2, N, K + 1, H * W], ready for
 * tdnzoo_ltdm_gate. PyTorch runs this as a dozen small ops per block (a GEMM with a few output
 * rows and three oneDNN convolutions on few channels among them), whose fixed costs dominate at
 * these sizes.
 *
 * Products are register-blocked 8 output channels by up to 48 pixels: per input channel (and
 * tap) three vector loads feed 24 multiply-adds. The 3x3 convolutions run on zero-bordered
 * copies, flattened: with row pitch W + 2, output q takes input q + ky * (W + 2) + kx, so a tap
 * is one contiguous load; the two extra columns per row are computed and dropped.
 */
#define OUT_BLOCK 8 /* output channels per register block */

/* w [K, C] (or [K, C, 9] with taps = 9) -> [ceil(K / 8)][C][taps][8], zero padded */
static float *pack_weights(const float *w, int64_t k, int64_t c, int taps) {
    const int64_t blocks = (k + OUT_BLOCK - 1) / OUT_BLOCK;
    float *packed = calloc((size_t)(blocks * c * taps * OUT_BLOCK), sizeof(float));
    if (!packed) return NULL;
    for (int64_t o = 0; o < k; o++)
        for (int64_t i = 0; i < c; i++)
            for (int t = 0; t < taps; t++)
                packed[(((o / OUT_BLOCK) * c + i) * taps + t) * OUT_BLOCK + o % OUT_BLOCK] = w[(o * c + i) * taps + t];
    return packed;
}

/*
 * One register block of a product over `inputs` input planes (plane stride `plane_in`) and `taps`
 * taps at offsets off[]: out[r][q] (+)= sum_i sum_t wp[i][t][r] * in[i][q + off[t]], for output
 * rows r < rows and q < 16 * pv, storing the first `valid` lanes; the sum starts from bias[r] (or 0
 * when bias is NULL), or from out itself with `accumulate`. `whole_loads`: all 16 * pv lanes of every
 * read are readable (else only the first `valid`).
 */
static inline __attribute__((always_inline)) void product_block(
    const float *in, int64_t plane_in, int64_t inputs, const int64_t *off, int taps, const float *wp,
    const float *bias, float *out, int64_t plane_out, int rows, const int pv, int64_t valid, const int accumulate,
    const int whole_loads) {
    v16 acc[OUT_BLOCK][3];
    /* constant indices only (these loops unroll), so acc stays in registers */
#pragma GCC unroll 8
    for (int r = 0; r < OUT_BLOCK; r++)
        for (int j = 0; j < pv; j++)
            acc[r][j] = accumulate && r < rows ? load_partial(out + r * plane_out + 16 * j, valid - 16 * j)
                                               : splat(bias ? bias[r] : 0.0f);
    for (int64_t i = 0; i < inputs; i++) {
        const float *src = in + i * plane_in;
        const float *wi = wp + i * taps * OUT_BLOCK;
        for (int t = 0; t < taps; t++) {
            v16 v[3];
            for (int j = 0; j < pv; j++) {
                if (whole_loads) memcpy(&v[j], src + off[t] + 16 * j, sizeof v[j]);
                else v[j] = valid > 16 * j ? load_partial(src + off[t] + 16 * j, valid - 16 * j) : splat(0.0f);
            }
#pragma GCC unroll 8
            for (int r = 0; r < OUT_BLOCK; r++) {
                const float wr = wi[t * OUT_BLOCK + r];
                for (int j = 0; j < pv; j++) acc[r][j] += wr * v[j];
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < OUT_BLOCK; r++)
        for (int j = 0; j < pv; j++)
            if (r < rows) store_partial(out + r * plane_out + 16 * j, acc[r][j], valid - 16 * j);
}

/*
 * The product at positions [0, len) for one block of OUT_BLOCK output rows, 48 pixels at a time.
 * Past len, `readable` (>= len) positions from each read's start may be read and `writable`
 * (>= len) written: the tail is then computed in whole vectors where it can.
 */
static void product_row(const float *in, int64_t plane_in, int64_t inputs, const int64_t *off, int taps,
                        const float *wp, const float *bias, float *out, int64_t plane_out, int rows, int64_t len,
                        int64_t readable, int64_t writable, int accumulate) {
#define BLOCK(PV, VALID, WHOLE)                                                                                       \
    (accumulate ? product_block(in + q, plane_in, inputs, off, taps, wp, bias, out + q, plane_out, rows, PV, VALID, 1, \
                                WHOLE)                                                                               \
                : product_block(in + q, plane_in, inputs, off, taps, wp, bias, out + q, plane_out, rows, PV, VALID, 0, \
                                WHOLE))
    int64_t q = 0;
    for (; q + 48 <= len; q += 48) BLOCK(3, 48, 1);
    const int64_t rest = len - q;
    if (rest <= 0) return;
    const int pv = (int)((rest + 15) / 16);
    const int64_t valid = writable - q < 16 * pv ? writable - q : 16 * pv;
    if (q + 16 * pv <= readable) {
        if (pv == 1) BLOCK(1, valid, 1);
        else if (pv == 2) BLOCK(2, valid, 1);
        else BLOCK(3, valid, 1);
    } else {
        if (pv == 1) BLOCK(1, valid, 0);
        else if (pv == 2) BLOCK(2, valid, 0);
        else BLOCK(3, valid, 0);
    }
#undef BLOCK
}

#define INPUT_CHUNK 64 /* input channels per pass of the reduction: their 48-pixel strips stay in L1 */

/* [K, C] @ [C, HW] for one frame n and one block pb of 48 pixels: b[n] = wr x[n], the reduction's
   product (its bias is added later) */
static void reduce_block(const float *x, const float *wr_packed, float *b, int64_t frames, int64_t channels, int64_t k,
                         int64_t hw, int64_t n, int64_t pb) {
    const int64_t kblocks = (k + OUT_BLOCK - 1) / OUT_BLOCK;
    const int64_t off[1] = {0};
    const int64_t p0 = 48 * pb, len = hw - p0 < 48 ? hw - p0 : 48;
    for (int64_t c0 = 0; c0 < channels; c0 += INPUT_CHUNK) {
        const int64_t inputs = channels - c0 < INPUT_CHUNK ? channels - c0 : INPUT_CHUNK;
        /* past a row of x lie the next rows: whole vectors may be read up to the end of x */
        const int64_t left = frames * channels * hw - ((n * channels + c0 + inputs - 1) * hw + p0);
        const int64_t readable = left < 48 ? left : 48;
        for (int64_t kb = 0; kb < kblocks; kb++) {
            const int rows = (int)(k - kb * OUT_BLOCK < OUT_BLOCK ? k - kb * OUT_BLOCK : OUT_BLOCK);
            product_row(x + (n * channels + c0) * hw + p0, hw, inputs, off, 1, wr_packed + (kb * channels + c0) * OUT_BLOCK,
                        NULL, b + (n * k + kb * OUT_BLOCK) * hw + p0, hw, rows, len, readable, len, c0 > 0);
        }
    }
}

/* out[q] = sum over taps of w[tap] * in[q + ky * pitch + kx], for q < rows * pitch - 2 (depthwise) */
static void depthwise3x3_flat(const float *restrict in, int64_t pitch, int64_t rows, const float *w,
                              float *restrict out) {
    const int64_t len = rows * pitch - 2;
    const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8];
    const float *r0 = in, *r1 = in + pitch, *r2 = in + 2 * pitch;
    for (int64_t q = 0; q < len; q++)
        out[q] = w0 * r0[q] + w1 * r0[q + 1] + w2 * r0[q + 2] + w3 * r1[q] + w4 * r1[q + 1] + w5 * r1[q + 2] +
                 w6 * r2[q] + w7 * r2[q + 1] + w8 * r2[q + 2];
}

/* src + bias, [rows, cols], into the interior of a [rows + 2, cols + 2] buffer whose border is zero */
static void pad_copy(const float *src, float bias, int64_t rows, int64_t cols, float *dst) {
    const int64_t pitch = cols + 2;
    for (int64_t y = 0; y < rows; y++)
        for (int64_t x = 0; x < cols; x++) dst[(y + 1) * pitch + 1 + x] = src[y * cols + x] + bias;
}

/* PyTorch's nearest source index (UpSample.h): floor(dst * (float)in / out), at most in - 1 */
static int64_t nearest_index(int64_t dst, int64_t in, int64_t out) {
    const float scale = (float)in / (float)out;
    const int64_t src = (int64_t)floorf((float)dst * scale);
    return src < in - 1 ? src : in - 1;
}

/* ------------------------------------------------------------------------------------------ */
/*
 * The L-TDM gate in inference (see the top of this file), per work item (clip, 8 channels, 48
 * pixels): for t = 0 .. T - 1 both directions' logits come from register-blocked products into
 * L1 scratch, y[t] = x + 0.5 x (sigmoid(f) - sigmoid(g)) goes to a ring of the last three steps,
 * and out[t - 1] = tconv(y)[t - 1] is written as soon as y[t] is known: x is read once and out
 * written once, and the logits and y never reach memory.
 */
static inline __attribute__((always_inline)) void gate_tile(
    const float *x, const float *m0, const float *m1, const float *w0, const float *w1, const float *tw, float *out,
    int64_t t_len, int64_t channels, int64_t k1, int64_t hw, int rows, int64_t valid, int64_t m1_readable,
    const int pv) {
    float f[OUT_BLOCK][48] __attribute__((aligned(64))), g[OUT_BLOCK][48] __attribute__((aligned(64)));
    float ring[3][OUT_BLOCK][48] __attribute__((aligned(64)));
    const int64_t off[1] = {0}, frame_stride = channels * hw, m_stride = k1 * hw;
    for (int64_t t = 0; t <= t_len; t++) {
        if (t < t_len) {
            /* m0 rows are followed by m1: whole-vector reads stay inside m except at its very end */
            product_block(m0 + t * m_stride, hw, k1, off, 1, w0, NULL, &f[0][0], 48, OUT_BLOCK, pv, 16 * pv, 0, 1);
            if (t < t_len - 1 || 16 * pv <= m1_readable)
                product_block(m1 + t * m_stride, hw, k1, off, 1, w1, NULL, &g[0][0], 48, OUT_BLOCK, pv, 16 * pv, 0, 1);
            else
                product_block(m1 + t * m_stride, hw, k1, off, 1, w1, NULL, &g[0][0], 48, OUT_BLOCK, pv, valid, 0, 0);
            for (int r = 0; r < rows; r++) {
                const float *xr = x + t * frame_stride + r * hw;
                for (int j = 0; j < pv; j++) {
                    v16 xv, fv, gv;
                    if (valid >= 16 * (j + 1)) memcpy(&xv, xr + 16 * j, sizeof xv);
                    else xv = load_partial(xr + 16 * j, valid - 16 * j);
                    memcpy(&fv, &f[r][16 * j], sizeof fv);
                    memcpy(&gv, &g[r][16 * j], sizeof gv);
                    /* sigmoid(f) - sigmoid(g) = (e^-g - e^-f) / ((1 + e^-f)(1 + e^-g)): one division, not
                       two. The exponents are clamped to +-40, so the product stays finite (below 6e34);
                       a sigmoid changes by under 5e-18 from the clamp. */
                    const v16 ef = vexp_within(-fv, 40.0f), eg = vexp_within(-gv, 40.0f);
                    const v16 y = xv + 0.5f * xv * ((eg - ef) / ((1.0f + ef) * (1.0f + eg)));
                    if (tw) memcpy(&ring[t % 3][r][16 * j], &y, sizeof y);
                    else store_partial(out + t * frame_stride + r * hw + 16 * j, y, valid - 16 * j);
                }
            }
        }
        if (!tw || t == 0) continue;
        /* out[s] = tw0 y[s - 1] + tw1 y[s] + tw2 y[s + 1], zero padded, for s = t - 1 */
        const int64_t step = t - 1;
        for (int r = 0; r < rows; r++) {
            const float a = tw[3 * r], b = tw[3 * r + 1], c = tw[3 * r + 2];
            for (int j = 0; j < pv; j++) {
                v16 cur, v;
                memcpy(&cur, &ring[step % 3][r][16 * j], sizeof cur);
                v = b * cur;
                if (step > 0) {
                    v16 prev;
                    memcpy(&prev, &ring[(step + 2) % 3][r][16 * j], sizeof prev);
                    v += a * prev;
                }
                if (step + 1 < t_len) {
                    v16 next;
                    memcpy(&next, &ring[(step + 1) % 3][r][16 * j], sizeof next);
                    v += c * next;
                }
                store_partial(out + step * frame_stride + r * hw + 16 * j, v, valid - 16 * j);
            }
        }
    }
}

/*
 * x, out: [B, T, C, HW]; m: [2, B*T, K1, HW]; w: [2, C, K1]; tw: [C, 3] or NULL.
 * Returns 0, or -1 when scratch memory could not be allocated.
 */
int tdnzoo_ltdm_gate(const float *x, const float *m, const float *w, const float *tw, float *out, int64_t batch,
                     int64_t t_len, int64_t channels, int64_t k1, int64_t hw, int num_threads) {
    const int64_t frames = batch * t_len;
    const int64_t cblocks = (channels + OUT_BLOCK - 1) / OUT_BLOCK, pblocks = (hw + 47) / 48;
    float *w0 = pack_weights(w, channels, k1, 1), *w1 = pack_weights(w + channels * k1, channels, k1, 1);
    if (!w0 || !w1) {
        free(w0), free(w1);
        return -1;
    }
#pragma omp parallel for collapse(3) schedule(static) num_threads(num_threads)
    for (int64_t b = 0; b < batch; b++)
        for (int64_t cb = 0; cb < cblocks; cb++)
            for (int64_t pb = 0; pb < pblocks; pb++) {
                const int64_t c0 = cb * OUT_BLOCK, p0 = pb * 48, valid = hw - p0 < 48 ? hw - p0 : 48;
                const int rows = (int)(channels - c0 < OUT_BLOCK ? channels - c0 : OUT_BLOCK);
                const int pv = (int)((valid + 15) / 16);
                const int64_t frame0 = b * t_len;
                const float *xs = x + (frame0 * channels + c0) * hw + p0;
                const float *m0 = m + frame0 * k1 * hw + p0, *m1 = m + (frames + frame0) * k1 * hw + p0;
                /* how far the last read of m (direction 1, last frame, last input) may go */
                const int64_t m1_readable = 2 * frames * k1 * hw - (((frames + frame0 + t_len - 1) * k1 + k1 - 1) * hw + p0);
                const float *wb0 = w0 + cb * k1 * OUT_BLOCK, *wb1 = w1 + cb * k1 * OUT_BLOCK;
                const float *twb = tw ? tw + 3 * c0 : NULL;
                float *os = out + (frame0 * channels + c0) * hw + p0;
                if (pv == 3)
                    gate_tile(xs, m0, m1, wb0, wb1, twb, os, t_len, channels, k1, hw, rows, valid, m1_readable, 3);
                else if (pv == 2)
                    gate_tile(xs, m0, m1, wb0, wb1, twb, os, t_len, channels, k1, hw, rows, valid, m1_readable, 2);
                else
                    gate_tile(xs, m0, m1, wb0, wb1, twb, os, t_len, channels, k1, hw, rows, valid, m1_readable, 1);
            }
    free(w0), free(w1);
    return 0;
}

/*
 * x: [N, C, H, W]; wr: [K, C] and bb: [K] (the folded reduction); wn: [K, 9] (depthwise);
 * wp, wf: [K, K, 9]; bp, bf: [K]; mixed: [2, N, K + 1, H * W]. H and W at least 2. Returns 0, or
 * -1 when scratch memory could not be allocated.
 */
int tdnzoo_ltdm_mixed(const float *x, const float *wr, const float *bb, const float *wn, const float *wp,
                      const float *bp, const float *wf, const float *bf, float *mixed, int64_t batch, int64_t t_len,
                      int64_t channels, int64_t k, int64_t h, int64_t w, int num_threads) {
    const int64_t frames = batch * t_len, hw = h * w, h2 = h / 2, w2 = w / 2;
    const int64_t pitch = w + 2, pitch2 = w2 + 2;
    const int64_t kblocks = (k + OUT_BLOCK - 1) / OUT_BLOCK, kpad = kblocks * OUT_BLOCK, pblocks = (hw + 47) / 48;
    /* conv outputs at q < len (rows * pitch - 2), computed in whole vectors up to q_end */
    const int64_t len = h * pitch - 2, len2 = h2 * pitch2 - 2;
    const int64_t q_end = (len + 15) / 16 * 16, q_end2 = (len2 + 15) / 16 * 16;
    const int64_t plane = (h + 2) * pitch, plane2 = (h2 + 2) * pitch2;
    const int64_t off[9] = {0, 1, 2, pitch, pitch + 1, pitch + 2, 2 * pitch, 2 * pitch + 1, 2 * pitch + 2};
    const int64_t off2[9] = {0, 1, 2, pitch2, pitch2 + 1, pitch2 + 2, 2 * pitch2, 2 * pitch2 + 1, 2 * pitch2 + 2};
    float *b = malloc(sizeof(float) * frames * k * hw);
    float *wr_packed = pack_weights(wr, k, channels, 1);
    float *wp_packed = pack_weights(wp, k, k, 9), *wf_packed = pack_weights(wf, k, k, 9);
    float *bp_pad = calloc((size_t)kpad, sizeof(float)), *bf_pad = calloc((size_t)kpad, sizeof(float));
    const int setup_failed = !b || !wr_packed || !wp_packed || !wf_packed || !bp_pad || !bf_pad;
    if (!setup_failed) {
        memcpy(bp_pad, bp, sizeof(float) * k);
        memcpy(bf_pad, bf, sizeof(float) * k);
    }
    int failed = setup_failed;
    /* One parallel region: the reduction for every frame, then (after the loop's barrier) the
       mixed maps per (direction, frame). Scratch is per thread, its zero borders written once.
       (Inside, `failed` is each thread's own, OR-ed into the one above at the end.) */
#pragma omp parallel num_threads(num_threads) reduction(|| : failed)
    {
        /* + 16: whole-vector reads past the last plane's end (into outputs that are dropped) */
        float *padded = calloc((size_t)(k * plane + 16), sizeof(float));     /* diff, zero-bordered */
        float *pooled_in = calloc((size_t)(k * plane2 + 16), sizeof(float)); /* 2x2 sums, zero-bordered */
        float *pooled = malloc(sizeof(float) * kpad * q_end2);               /* conv_pooled output */
        float *full = malloc(sizeof(float) * kpad * q_end);                  /* conv_full output */
        float *scratch = calloc((size_t)plane, sizeof(float));               /* one padded channel */
        const int ok = !setup_failed && padded && pooled_in && pooled && full && scratch;
        failed = !ok;
#pragma omp for collapse(2) schedule(static)
        for (int64_t n = 0; n < frames; n++)
            for (int64_t pb = 0; pb < pblocks; pb++)
                if (ok) reduce_block(x, wr_packed, b, frames, channels, k, hw, n, pb);
#pragma omp for collapse(2) schedule(static)
        for (int64_t d = 0; d < 2; d++) {
            for (int64_t n = 0; n < frames; n++) {
                if (!ok) continue;
                float *out = mixed + (d * frames + n) * (k + 1) * hw;
                const int64_t t = n % t_len;
                const int open_end = d == 0 ? t == t_len - 1 : t == 0;
                const float *cur = b + n * k * hw, *other = open_end ? cur : b + (d == 0 ? n + 1 : n - 1) * k * hw;
                /* diff, straight into the zero-bordered buffer; all zero at an open end */
                if (open_end) memset(padded, 0, sizeof(float) * k * plane);
                for (int64_t c = 0; c < k && !open_end; c++) {
                    pad_copy(other + c * hw, bb[c], h, w, scratch);
                    float *dst = padded + c * plane;
                    /* conv_neighbor(other) at the interior; it also writes the border cells between
                       rows, zeroed again below (the others stay zero from calloc) */
                    depthwise3x3_flat(scratch, pitch, h, wn + 9 * c, dst + pitch + 1);
                    for (int64_t y = 0; y < h; y++) {
                        float *row = dst + (y + 1) * pitch + 1;
                        const float *cur_row = cur + c * hw + y * w;
                        for (int64_t i = 0; i < w; i++) row[i] -= cur_row[i] + bb[c];
                        row[w] = 0.0f, row[w + 1] = 0.0f; /* the dropped columns: back to zero border */
                    }
                }
                /* 2x2 sums (floor mode) into the interior of the zero-bordered buffer */
                for (int64_t c = 0; c < k; c++)
                    for (int64_t y = 0; y < h2; y++) {
                        const float *r0 = padded + c * plane + (2 * y + 1) * pitch + 1, *r1 = r0 + pitch;
                        float *dst = pooled_in + c * plane2 + (y + 1) * pitch2 + 1;
                        for (int64_t i = 0; i < w2; i++)
                            dst[i] = (r0[2 * i] + r1[2 * i]) + (r0[2 * i + 1] + r1[2 * i + 1]);
                    }
                /* the two 3x3 convolutions, 8 output channels at a time; reads may run 16 past a plane */
                for (int64_t ob = 0; ob < kblocks; ob++) {
                    const int rows = (int)(k - ob * OUT_BLOCK < OUT_BLOCK ? k - ob * OUT_BLOCK : OUT_BLOCK);
                    product_row(pooled_in, plane2, k, off2, 9, wp_packed + ob * k * 9 * OUT_BLOCK,
                                bp_pad + ob * OUT_BLOCK, pooled + ob * OUT_BLOCK * q_end2, q_end2, rows, len2, q_end2,
                                q_end2, 0);
                    product_row(padded, plane, k, off, 9, wf_packed + ob * k * 9 * OUT_BLOCK, bf_pad + ob * OUT_BLOCK,
                                full + ob * OUT_BLOCK * q_end, q_end, rows, len, q_end, q_end, 0);
                }
                for (int64_t o = 0; o < k; o++) {
                    const float *acc = full + o * q_end;
                    const float *diff = padded + o * plane + pitch + 1;
                    const float *p = pooled + o * q_end2;
                    for (int64_t y = 0; y < h; y++) {
                        const float *prow = p + nearest_index(y, h2, h) * pitch2;
                        float *dst = out + o * hw + y * w;
                        if (2 * h2 == h && 2 * w2 == w)
                            for (int64_t i = 0; i < w; i++)
                                dst[i] = (acc[y * pitch + i] + diff[y * pitch + i]) + prow[i / 2];
                        else
                            for (int64_t i = 0; i < w; i++)
                                dst[i] = (acc[y * pitch + i] + diff[y * pitch + i]) + prow[nearest_index(i, w2, w)];
                    }
                }
                for (int64_t q = 0; q < hw; q++) out[k * hw + q] = 1.0f;
            }
        }
        free(padded), free(pooled_in), free(pooled), free(full), free(scratch);
    }
    free(b), free(wr_packed), free(wp_packed), free(wf_packed), free(bp_pad), free(bf_pad);
    return failed ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/*
 * The S-TDM's input in inference: the 2x2 average-pooled differences of consecutive frames,
 *     out[n, 3 f + ch] = pool(frames[n, 3 (f + 1) + ch]) - pool(frames[n, 3 f + ch]),
 * pool being (r0[2x] + r1[2x] + r0[2x+1] + r1[2x+1]) / 4 (floor mode), in one pass over the
 * frames: PyTorch writes the pooled frames, reads them back and writes the differences.
 * frames: [N, F * 3, H, W]; out: [N, (F - 1) * 3, H / 2, W / 2].
 */
void tdnzoo_pooled_frame_differences(const float *frames, float *out, int64_t n, int64_t f, int64_t h, int64_t w,
                                     int num_threads) {
    const int64_t h2 = h / 2, w2 = w / 2, channels = 3 * f;
#pragma omp parallel for collapse(3) schedule(static) num_threads(num_threads)
    for (int64_t i = 0; i < n; i++) {
        for (int64_t ch = 0; ch < 3; ch++) {
            for (int64_t y = 0; y < h2; y++) {
                float prev[w2 > 0 ? w2 : 1], cur[w2 > 0 ? w2 : 1];
                for (int64_t j = 0; j < f; j++) {
                    const float *r0 = frames + ((i * channels + 3 * j + ch) * h + 2 * y) * w, *r1 = r0 + w;
                    for (int64_t x = 0; x < w2; x++)
                        cur[x] = ((r0[2 * x] + r1[2 * x]) + (r0[2 * x + 1] + r1[2 * x + 1])) * 0.25f;
                    if (j > 0) {
                        float *dst = out + ((i * 3 * (f - 1) + 3 * (j - 1) + ch) * h2 + y) * w2;
                        for (int64_t x = 0; x < w2; x++) dst[x] = cur[x] - prev[x];
                    }
                    memcpy(prev, cur, sizeof(float) * w2);
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/*
 * TDN's fusion of the S-TDM into the RGB stream, in place: x = alpha * x + beta * up(d), up being
 * nearest 2x upsampling. With lerp (alpha + beta == 1) it is torch.lerp(x, up(d), beta), in
 * lerp's own formula. x: [N, C, H, W] with H = 2 H2, W = 2 W2; d: [N, C, H2, W2], or
 * channels-last [N, H2, W2, C] when d_channels_last (the S-TDM stage's own layout; reading it
 * here saves converting it). PyTorch materialises the upsampled map, or half of it, first.
 * With relu, x is first replaced by relu(x): the fusion then rides on the pass of the ReLU that
 * ends the stage before it (see FusingReLU in tdm.py), one full-size pass fewer.
 */
/* row pair [2, W] <- fused with the upsampled source row src [W / 2] */
static void fuse_rows(float *row0, float *row1, const float *src, int64_t w, float alpha, float beta, int lerp,
                      int relu) {
    float up[w];
    for (int64_t k = 0; k < w / 2; k++) up[2 * k] = up[2 * k + 1] = src[k];
    for (int r = 0; r < 2; r++) {
        float *row = r ? row1 : row0;
        if (relu) /* torch.relu's values, a NaN included (the comparison is false) */
            for (int64_t i = 0; i < w; i++) row[i] = row[i] < 0.0f ? 0.0f : row[i];
        if (!lerp)
            for (int64_t i = 0; i < w; i++) row[i] = row[i] * alpha + beta * up[i];
        else if (beta < 0.5f)
            for (int64_t i = 0; i < w; i++) row[i] = row[i] + beta * (up[i] - row[i]);
        else
            for (int64_t i = 0; i < w; i++) row[i] = up[i] - (up[i] - row[i]) * (1.0f - beta);
    }
}

void tdnzoo_fuse_upsampled(float *x, const float *d, int64_t n, int64_t c, int64_t h2, int64_t w2,
                           int d_channels_last, float alpha, float beta, int lerp, int relu, int num_threads) {
    const int64_t h = 2 * h2, w = 2 * w2;
    if (!d_channels_last) {
#pragma omp parallel for collapse(2) schedule(static) num_threads(num_threads)
        for (int64_t i = 0; i < n; i++)
            for (int64_t ch = 0; ch < c; ch++)
                for (int64_t y2 = 0; y2 < h2; y2++) {
                    float *row = x + ((i * c + ch) * h + 2 * y2) * w;
                    fuse_rows(row, row + w, d + ((i * c + ch) * h2 + y2) * w2, w, alpha, beta, lerp, relu);
                }
        return;
    }
    /* per block of 16 channels, row by row: the source rows are gathered as [16, W2] (16 channels
       are one cache line of the channels-last map), the fused rows of x are read in order */
    const int64_t blocks = (c + 15) / 16;
#pragma omp parallel for collapse(2) schedule(static) num_threads(num_threads)
    for (int64_t i = 0; i < n; i++)
        for (int64_t cb = 0; cb < blocks; cb++) {
            const int64_t c0 = 16 * cb, nc = c - c0 < 16 ? c - c0 : 16;
            float src[16][w2];
            for (int64_t y2 = 0; y2 < h2; y2++) {
                const float *line = d + ((i * h2 + y2) * w2) * c + c0;
                for (int64_t k = 0; k < w2; k++)
                    for (int64_t j = 0; j < nc; j++) src[j][k] = line[k * c + j];
                for (int64_t j = 0; j < nc; j++) {
                    float *row = x + ((i * c + c0 + j) * h + 2 * y2) * w;
                    fuse_rows(row, row + w, src[j], w, alpha, beta, lerp, relu);
                }
            }
        }
}

/* ------------------------------------------------------------------------------------------ */
/*
 * Training: the L-TDM gate and the temporal conv after it, forward and backward, from the two
 * directions' logits (lf = z_f, lb = -z_b, each [B * T, C, HW]; the expand product stays a GEMM
 * under autograd). Forward: y = x + 0.5 * x * (sigmoid(lf) - sigmoid(lb)), out = tconv(y). The
 * backward recomputes y and the sigmoids from x, lf and lb (three maps saved instead of five) and
 * writes every gradient in one pass; PyTorch's ops take about twenty full-size passes for both.
 * Work items are (clip, channel); tw may be NULL (no temporal conv).
 */
void tdnzoo_gate_tconv_forward(const float *x, const float *lf, const float *lb, const float *tw, float *out,
                               int64_t batch, int64_t t_len, int64_t channels, int64_t hw, int num_threads) {
    const int64_t blocks = (hw + PIXELS - 1) / PIXELS;
#pragma omp parallel for collapse(2) schedule(static) num_threads(num_threads)
    for (int64_t b = 0; b < batch; b++) {
        for (int64_t c = 0; c < channels; c++) {
            const float w0 = tw ? tw[3 * c] : 0.0f, w1 = tw ? tw[3 * c + 1] : 1.0f, w2 = tw ? tw[3 * c + 2] : 0.0f;
            v16 y[t_len][2];
            for (int64_t blk = 0; blk < blocks; blk++) {
                const int64_t p0 = blk * PIXELS, n = hw - p0 < PIXELS ? hw - p0 : PIXELS;
                for (int64_t t = 0; t < t_len; t++) {
                    const int64_t offset = ((b * t_len + t) * channels + c) * hw + p0;
                    v16 xa, xb, fa, fb, ga, gb;
                    load_block(&xa, &xb, x + offset, n);
                    load_block(&fa, &fb, lf + offset, n);
                    load_block(&ga, &gb, lb + offset, n);
                    y[t][0] = xa + 0.5f * xa * (vsigmoid(fa) - vsigmoid(ga));
                    y[t][1] = xb + 0.5f * xb * (vsigmoid(fb) - vsigmoid(gb));
                }
                for (int64_t t = 0; t < t_len; t++) {
                    v16 lo = y[t][0] * w1, hi = y[t][1] * w1;
                    if (t > 0) lo += y[t - 1][0] * w0, hi += y[t - 1][1] * w0;
                    if (t + 1 < t_len) lo += y[t + 1][0] * w2, hi += y[t + 1][1] * w2;
                    store_block(out + ((b * t_len + t) * channels + c) * hw + p0, lo, hi, n);
                }
            }
        }
    }
}

static inline double horizontal_sum(v16 v) {
    double s = 0.0;
    for (int i = 0; i < 16; i++) s += v[i];
    return s;
}

/* gtw: [B, C, 3] partial sums of the temporal-conv weight gradient (per clip; the caller adds them) */
void tdnzoo_gate_tconv_backward(const float *go, const float *x, const float *lf, const float *lb, const float *tw,
                                float *gx, float *glf, float *glb, double *gtw, int64_t batch, int64_t t_len,
                                int64_t channels, int64_t hw, int num_threads) {
    const int64_t blocks = (hw + PIXELS - 1) / PIXELS;
#pragma omp parallel for collapse(2) schedule(static) num_threads(num_threads)
    for (int64_t b = 0; b < batch; b++) {
        for (int64_t c = 0; c < channels; c++) {
            const float w0 = tw ? tw[3 * c] : 0.0f, w1 = tw ? tw[3 * c + 1] : 1.0f, w2 = tw ? tw[3 * c + 2] : 0.0f;
            v16 y[t_len][2], g[t_len][2];
            v16 tap0 = {}, tap1 = {}, tap2 = {};
            for (int64_t blk = 0; blk < blocks; blk++) {
                const int64_t p0 = blk * PIXELS, n = hw - p0 < PIXELS ? hw - p0 : PIXELS;
                for (int64_t t = 0; t < t_len; t++) {
                    const int64_t offset = ((b * t_len + t) * channels + c) * hw + p0;
                    load_block(&y[t][0], &y[t][1], go + offset, n); /* y holds grad_out for now */
                }
                for (int64_t t = 0; t < t_len; t++) { /* the adjoint of the temporal conv: flipped taps */
                    v16 lo = y[t][0] * w1, hi = y[t][1] * w1;
                    if (t + 1 < t_len) lo += y[t + 1][0] * w0, hi += y[t + 1][1] * w0;
                    if (t > 0) lo += y[t - 1][0] * w2, hi += y[t - 1][1] * w2;
                    g[t][0] = lo, g[t][1] = hi;
                }
                for (int64_t t = 0; t < t_len; t++) {
                    const int64_t offset = ((b * t_len + t) * channels + c) * hw + p0;
                    v16 xh[2], fh[2], bh[2];
                    load_block(&xh[0], &xh[1], x + offset, n);
                    load_block(&fh[0], &fh[1], lf + offset, n);
                    load_block(&bh[0], &bh[1], lb + offset, n);
                    v16 dx[2], df[2], db[2];
                    for (int h = 0; h < 2; h++) {
                        const v16 sf = vsigmoid(fh[h]), sb = vsigmoid(bh[h]), gate = sf - sb, gy = g[t][h];
                        const v16 half = 0.5f * gy * xh[h];
                        dx[h] = gy + 0.5f * gy * gate;
                        df[h] = half * (1.0f - sf) * sf;
                        db[h] = -(half * (1.0f - sb) * sb);
                        g[t][h] = xh[h] + 0.5f * xh[h] * gate; /* now y[t], for the weight gradient */
                    }
                    store_block(gx + offset, dx[0], dx[1], n);
                    store_block(glf + offset, df[0], df[1], n);
                    store_block(glb + offset, db[0], db[1], n);
                }
                if (!tw) continue;
                for (int64_t t = 0; t < t_len; t++) { /* out[t] = w0 y[t-1] + w1 y[t] + w2 y[t+1] */
                    for (int h = 0; h < 2; h++) {
                        if (t > 0) tap0 += y[t][h] * g[t - 1][h];
                        tap1 += y[t][h] * g[t][h];
                        if (t + 1 < t_len) tap2 += y[t][h] * g[t + 1][h];
                    }
                }
            }
            if (tw) {
                double *dst = gtw + (b * channels + c) * 3;
                dst[0] = horizontal_sum(tap0), dst[1] = horizontal_sum(tap1), dst[2] = horizontal_sum(tap2);
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/*
 * 3x3 max-pooling, stride 2, padding 1 (floor mode) on NCHW maps, in inference: the S-TDM stem's.
 * A NaN in a window wins, as in F.max_pool2d. Per output row the three input rows are reduced
 * to one, then the 3-wide maxima at every column of it, both contiguous vector loops with -inf
 * padding; the output takes every other column. PyTorch's NCHW kernel is several times slower,
 * and strided torch.maximum calls (the fallback) take four passes.
 * x: [planes, H, W]; out: [planes, (H - 1) / 2 + 1, (W - 1) / 2 + 1].
 */
/* max(m, v) lane-wise, a NaN in either winning; masks, not branches (random data mispredicts them) */
static inline v16 nan_max16(v16 m, v16 v) { return where((v > m) | (v != v), v, m); }

void tdnzoo_max_pool3x3s2(const float *x, float *out, int64_t planes, int64_t h, int64_t w, int num_threads) {
    const int64_t ho = (h - 1) / 2 + 1, wo = (w - 1) / 2 + 1, wv = (w + 15) / 16 * 16;
#pragma omp parallel for schedule(static) num_threads(num_threads)
    for (int64_t p = 0; p < planes; p++) {
        /* rows[-1] and rows[w ..] are -inf (the padding); windows is the 3-wide maximum at every column */
        float buf[wv + 48], windows[wv];
        float *rows = buf + 16;
        rows[-1] = -INFINITY;
        for (int64_t i = 0; i < ho; i++) {
            const float *r1 = x + (p * h + 2 * i) * w;
            const float *r0 = i > 0 ? r1 - w : r1, *r2 = 2 * i + 1 < h ? r1 + w : r1;
            for (int64_t j = 0; j < w; j += 16) { /* the three rows' maxima, 16 columns at a time */
                v16 a, b, c;
                if (j + 16 <= w) {
                    memcpy(&a, r0 + j, sizeof a), memcpy(&b, r1 + j, sizeof b), memcpy(&c, r2 + j, sizeof c);
                } else {
                    a = load_partial(r0 + j, w - j), b = load_partial(r1 + j, w - j), c = load_partial(r2 + j, w - j);
                }
                const v16 m = nan_max16(nan_max16(a, b), c);
                memcpy(rows + j, &m, sizeof m);
            }
            for (int64_t j = w; j < wv + 16; j++) rows[j] = -INFINITY;
            for (int64_t j = 0; j < wv; j += 16) {
                v16 a, b, c;
                memcpy(&a, rows + j - 1, sizeof a), memcpy(&b, rows + j, sizeof b), memcpy(&c, rows + j + 1, sizeof c);
                const v16 m = nan_max16(nan_max16(a, b), c);
                memcpy(windows + j, &m, sizeof m);
            }
            float *dst = out + (p * ho + i) * wo;
            for (int64_t k = 0; k < wo; k++) dst[k] = windows[2 * k];
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* 1 when each of the `count` byte ranges a[i] and b[i], n[i] bytes long, are equal (else 0): the
   check that cached folded weights still match their module's weights, once per forward */
int tdnzoo_same_bytes(int64_t count, const void *const *a, const void *const *b, const int64_t *n) {
    for (int64_t i = 0; i < count; i++)
        if (a[i] != b[i] && memcmp(a[i], b[i], (size_t)n[i]) != 0) return 0;
    return 1;
}
