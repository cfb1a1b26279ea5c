/* SmolQL's fused resize + normalise: uint8 HWC pixels -> float32 CHW slot of a batch buffer.
 *
 * Input pixels are 4 bytes (RGBX, as libjpeg-turbo's JCS_EXT_RGBX writes them), so that one
 * 32-bit load feeds four SIMD lanes. The resampling is Pillow's antialiased two-pass filter (bilinear, i.e. a triangle whose
 * support widens with the downscale factor) with the same 22-bit fixed-point coefficients and
 * rounding, so the output equals torchvision's PIL-based Resize + CenterCrop bit for bit. Only
 * the output window that survives the crop is computed, from only the input rows and columns
 * it needs; the vertical pass writes normalised floats, transposed to CHW, straight into the
 * caller's buffer: the only float values ever written are the final ones.
 *
 * Geometry per axis: the "virtual" resize maps an input of in_size pixels to an output of
 * in_size / scale pixels (Pillow: center = (xx + 0.5) * scale). We compute output pixels
 * xx = out_offset .. out_offset + out_len - 1, reading input pixel i from src[i - origin]:
 * the caller decoded only the input region starting at `origin`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE4_1__)
#include <smmintrin.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#define PRECISION_BITS (32 - 8 - 2)

typedef struct {
    double scale;      /* input pixels per output pixel */
    long out_offset;   /* first output index computed */
    long in_size;      /* size of the virtual input (for clipping, as Pillow does) */
    long origin;       /* virtual input index of src's first pixel on this axis */
} axis;

typedef struct {
    int ksize;
    int *bounds;       /* per output: first tap (local to src), number of taps */
    int32_t *kk;       /* per output: ksize fixed-point weights */
} coeffs;

static double triangle(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc, for outputs out_offset.. */
static int make_coeffs(const axis *a, int out_len, long src_len, coeffs *c, char *err) {
    double filterscale = a->scale < 1.0 ? 1.0 : a->scale;
    double support = 1.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *pre = malloc(sizeof(double) * ksize);
    c->ksize = ksize;
    c->bounds = malloc(sizeof(int) * 2 * out_len);
    c->kk = malloc(sizeof(int32_t) * ksize * out_len);
    if (!pre || !c->bounds || !c->kk) {
        free(pre);
        strcpy(err, "out of memory");
        return 0;
    }
    for (int j = 0; j < out_len; j++) {
        long xx = a->out_offset + j;
        double center = (xx + 0.5) * a->scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        long xmin = (long)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        long xmax = (long)(center + support + 0.5);
        if (xmax > a->in_size) xmax = a->in_size;
        xmax -= xmin;
        if (xmax > ksize) xmax = ksize;
        if (xmax <= 0) { /* no input pixel under this output pixel: a caller's bad geometry */
            snprintf(err, 200, "output pixel %ld maps outside the input (0..%ld)", xx,
                     a->in_size);
            free(pre);
            return 0;
        }
        for (long x = 0; x < xmax; x++) {
            double w = triangle((x + xmin - center + 0.5) * ss);
            pre[x] = w;
            ww += w;
        }
        for (long x = 0; x < ksize; x++) {
            double k = x < xmax ? (ww != 0.0 ? pre[x] / ww : pre[x]) : 0.0;
            c->kk[j * ksize + x] = k < 0 ? (int32_t)(-0.5 + k * (1 << PRECISION_BITS))
                                         : (int32_t)(0.5 + k * (1 << PRECISION_BITS));
        }
        long local = xmin - a->origin;
        if (local < 0 || local + xmax > src_len) {
            snprintf(err, 200,
                     "output pixel %ld needs input %ld..%ld, outside the decoded %ld..%ld",
                     xx, xmin, xmin + xmax, a->origin, a->origin + src_len);
            free(pre);
            return 0;
        }
        c->bounds[2 * j] = (int)local;
        c->bounds[2 * j + 1] = (int)xmax;
    }
    free(pre);
    return 1;
}

static inline uint8_t clip8(int32_t v) {
    v >>= PRECISION_BITS;
    return v < 0 ? 0 : (v > 255 ? 255 : (uint8_t)v);
}

typedef struct {
    const uint8_t *src;                      /* 4 bytes per pixel (RGBX); X is ignored */
    Py_ssize_t src_h, src_w, src_sy, src_sx; /* strides in bytes */
    float *out;
    Py_ssize_t out_h, out_w, out_sc, out_sy; /* strides in floats; x stride is 1 */
    axis ax, ay;
    float mul[3], add[3];
} job;

/* One output pixel of the horizontal pass: taps over 4-byte pixels, 4 lanes at once. Writes 4
 * bytes (RGB + junk) at o; the caller packs pixels 3 bytes apart and leaves slack at the end. */
static inline void horizontal_pixel(const uint8_t *p, Py_ssize_t step, const int32_t *k, int n,
                                    uint8_t *o) {
#if defined(__SSE4_1__)
    __m128i acc = _mm_set1_epi32(1 << (PRECISION_BITS - 1));
    for (int t = 0; t < n; t++, p += step) {
        int32_t v;
        memcpy(&v, p, 4);
        __m128i px = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(v));
        acc = _mm_add_epi32(acc, _mm_mullo_epi32(px, _mm_set1_epi32(k[t])));
    }
    acc = _mm_srai_epi32(acc, PRECISION_BITS);
    acc = _mm_packs_epi32(acc, acc);
    int32_t packed = _mm_cvtsi128_si32(_mm_packus_epi16(acc, acc));
    memcpy(o, &packed, 4);
#else
    int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
    for (int t = 0; t < n; t++, p += step) {
        s0 += p[0] * k[t];
        s1 += p[1] * k[t];
        s2 += p[2] * k[t];
    }
    o[0] = clip8(s0);
    o[1] = clip8(s1);
    o[2] = clip8(s2);
#endif
}

/* One output row of the vertical pass over `bytes` bytes of packed RGBX rows. */
static void vertical_row(const uint8_t *rows, size_t row_bytes, int n, const int32_t *k,
                         uint8_t *line, size_t bytes) {
    size_t q = 0;
#if defined(__SSE4_1__)
    const __m128i round = _mm_set1_epi32(1 << (PRECISION_BITS - 1));
    for (; q + 16 <= bytes; q += 16) {
        __m128i a0 = round, a1 = round, a2 = round, a3 = round;
        for (int t = 0; t < n; t++) {
            __m128i b = _mm_loadu_si128((const __m128i *)(rows + t * row_bytes + q));
            __m128i kt = _mm_set1_epi32(k[t]);
            a0 = _mm_add_epi32(a0, _mm_mullo_epi32(_mm_cvtepu8_epi32(b), kt));
            a1 = _mm_add_epi32(a1, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(b, 4)), kt));
            a2 = _mm_add_epi32(a2, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(b, 8)), kt));
            a3 = _mm_add_epi32(a3, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(b, 12)), kt));
        }
        __m128i lo = _mm_packs_epi32(_mm_srai_epi32(a0, PRECISION_BITS),
                                     _mm_srai_epi32(a1, PRECISION_BITS));
        __m128i hi = _mm_packs_epi32(_mm_srai_epi32(a2, PRECISION_BITS),
                                     _mm_srai_epi32(a3, PRECISION_BITS));
        _mm_storeu_si128((__m128i *)(line + q), _mm_packus_epi16(lo, hi));
    }
#endif
    for (; q < bytes; q++) {
        int32_t acc = 1 << (PRECISION_BITS - 1);
        for (int t = 0; t < n; t++) acc += rows[t * row_bytes + q] * k[t];
        line[q] = clip8(acc);
    }
}

#if defined(__x86_64__) || defined(_M_X64)
/* The same vertical row with 8 lanes (AVX2), chosen at run time when the CPU has it. */
__attribute__((target("avx2"))) static void vertical_row_avx2(const uint8_t *rows,
                                                              size_t row_bytes, int n,
                                                              const int32_t *k, uint8_t *line,
                                                              size_t bytes) {
    const __m256i round = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
    size_t q = 0;
    for (; q + 32 <= bytes; q += 32) {
        __m256i a0 = round, a1 = round, a2 = round, a3 = round;
        for (int t = 0; t < n; t++) {
            const uint8_t *r = rows + t * row_bytes + q;
            __m256i kt = _mm256_set1_epi32(k[t]);
            a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(
                _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)r)), kt));
            a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(
                _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(r + 8))), kt));
            a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(
                _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(r + 16))), kt));
            a3 = _mm256_add_epi32(a3, _mm256_mullo_epi32(
                _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(r + 24))), kt));
        }
        __m256i lo = _mm256_packs_epi32(_mm256_srai_epi32(a0, PRECISION_BITS),
                                        _mm256_srai_epi32(a1, PRECISION_BITS));
        __m256i hi = _mm256_packs_epi32(_mm256_srai_epi32(a2, PRECISION_BITS),
                                        _mm256_srai_epi32(a3, PRECISION_BITS));
        /* packs work within 128-bit halves: restore the byte order afterwards */
        __m256i bytes8 = _mm256_packus_epi16(lo, hi);
        bytes8 = _mm256_permutevar8x32_epi32(bytes8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(line + q), bytes8);
    }
    vertical_row(rows + q, row_bytes, n, k, line + q, bytes - q);
}

/* Horizontal pass for four rows at once: the rows share every output column's taps, so one
 * broadcast weight feeds 16 lanes (4 pixels x RGBX) in two registers. */
static inline int32_t load4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

__attribute__((target("avx2"))) static void horizontal_4rows_avx2(
    const uint8_t *src, Py_ssize_t sy, Py_ssize_t step, const coeffs *cx, int W, uint8_t *out,
    size_t out_stride) {
    const __m256i round = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
    for (int j = 0; j < W; j++) {
        const uint8_t *p = src + (Py_ssize_t)cx->bounds[2 * j] * step;
        int n = cx->bounds[2 * j + 1];
        const int32_t *k = cx->kk + (size_t)j * cx->ksize;
        __m256i a01 = round, a23 = round;
        for (int t = 0; t < n; t++, p += step) {
            __m256i kt = _mm256_set1_epi32(k[t]);
            __m128i x01 = _mm_insert_epi32(_mm_cvtsi32_si128(load4(p)), load4(p + sy), 1);
            __m128i x23 = _mm_insert_epi32(_mm_cvtsi32_si128(load4(p + 2 * sy)),
                                           load4(p + 3 * sy), 1);
            a01 = _mm256_add_epi32(a01, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(x01), kt));
            a23 = _mm256_add_epi32(a23, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(x23), kt));
        }
        a01 = _mm256_srai_epi32(a01, PRECISION_BITS);
        a23 = _mm256_srai_epi32(a23, PRECISION_BITS);
        __m128i w01 = _mm_packs_epi32(_mm256_castsi256_si128(a01), _mm256_extracti128_si256(a01, 1));
        __m128i w23 = _mm_packs_epi32(_mm256_castsi256_si128(a23), _mm256_extracti128_si256(a23, 1));
        __m128i b = _mm_packus_epi16(w01, w23);
        int32_t v[4];
        _mm_storeu_si128((__m128i *)v, b);
        for (int q = 0; q < 4; q++) memcpy(out + q * out_stride + 3 * j, &v[q], 4);
    }
}

/* Packed RGB bytes -> three normalised float planes, 16 pixels per step (pshufb deinterleave,
 * then 8-wide convert and fused multiply-add). Returns how many pixels it did. */
__attribute__((target("avx2,fma"))) static int planes_avx2(const uint8_t *line, int W, float *o0,
                                                            float *o1, float *o2,
                                                            const float *mul, const float *add) {
    const __m128i ra = _mm_setr_epi8(0, 3, 6, 9, 12, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m128i rb = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, 2, 5, 8, 11, 14, -1, -1, -1, -1, -1);
    const __m128i rc = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 1, 4, 7, 10, 13);
    const __m128i ga = _mm_setr_epi8(1, 4, 7, 10, 13, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m128i gb = _mm_setr_epi8(-1, -1, -1, -1, -1, 0, 3, 6, 9, 12, 15, -1, -1, -1, -1, -1);
    const __m128i gc = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 2, 5, 8, 11, 14);
    const __m128i ba = _mm_setr_epi8(2, 5, 8, 11, 14, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m128i bb = _mm_setr_epi8(-1, -1, -1, -1, -1, 1, 4, 7, 10, 13, -1, -1, -1, -1, -1, -1);
    const __m128i bc = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 3, 6, 9, 12, 15);
    float *outs[3] = {o0, o1, o2};
    __m256 m[3], a[3];
    for (int c = 0; c < 3; c++) {
        m[c] = _mm256_set1_ps(mul[c]);
        a[c] = _mm256_set1_ps(add[c]);
    }
    int j = 0;
    for (; j + 16 <= W; j += 16) {
        const uint8_t *p = line + 3 * j;
        __m128i x = _mm_loadu_si128((const __m128i *)p);
        __m128i y = _mm_loadu_si128((const __m128i *)(p + 16));
        __m128i z = _mm_loadu_si128((const __m128i *)(p + 32));
        __m128i pl[3];
        pl[0] = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(x, ra), _mm_shuffle_epi8(y, rb)),
                             _mm_shuffle_epi8(z, rc));
        pl[1] = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(x, ga), _mm_shuffle_epi8(y, gb)),
                             _mm_shuffle_epi8(z, gc));
        pl[2] = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(x, ba), _mm_shuffle_epi8(y, bb)),
                             _mm_shuffle_epi8(z, bc));
        for (int c = 0; c < 3; c++) {
            __m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(pl[c]));
            __m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(pl[c], 8)));
            _mm256_storeu_ps(outs[c] + j, _mm256_fmadd_ps(lo, m[c], a[c]));
            _mm256_storeu_ps(outs[c] + j + 8, _mm256_fmadd_ps(hi, m[c], a[c]));
        }
    }
    return j;
}
#define HAVE_AVX2_PATH 1
#endif

static int resample(const job *jb, char *err) {
#ifdef HAVE_AVX2_PATH
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    coeffs cx = {0, NULL, NULL}, cy = {0, NULL, NULL};
    uint8_t *tmp = NULL, *line = NULL;
    int ok = 0;
    int W = (int)jb->out_w, H = (int)jb->out_h;
    if (!make_coeffs(&jb->ax, W, jb->src_w, &cx, err)) goto done;
    if (!make_coeffs(&jb->ay, H, jb->src_h, &cy, err)) goto done;
    int first = cy.bounds[0], last = 0;
    for (int j = 0; j < H; j++) {
        int end = cy.bounds[2 * j] + cy.bounds[2 * j + 1];
        if (cy.bounds[2 * j] < first) first = cy.bounds[2 * j];
        if (end > last) last = end;
    }
    int rows = last - first;
    /* Packed RGB between the passes; each pixel store writes 4 bytes, so rows get 4 bytes of
     * slack to keep a row's last store out of the next row. */
    size_t row_len = (size_t)W * 3, row_bytes = row_len + 4;
    tmp = malloc((size_t)rows * row_bytes + 32);
    line = malloc(row_bytes + 32);
    if (!tmp || !line) {
        strcpy(err, "out of memory");
        goto done;
    }
    /* Horizontal pass over the needed rows only, into packed RGB. */
    int r = 0;
#ifdef HAVE_AVX2_PATH
    if (avx2) {
        for (; r + 3 < rows; r += 4) {
            horizontal_4rows_avx2(jb->src + (Py_ssize_t)(first + r) * jb->src_sy, jb->src_sy,
                                  jb->src_sx, &cx, W, tmp + (size_t)r * row_bytes, row_bytes);
        }
    }
#endif
    for (; r < rows; r++) {
        const uint8_t *src_row = jb->src + (Py_ssize_t)(first + r) * jb->src_sy;
        uint8_t *o = tmp + (size_t)r * row_bytes;
        for (int j = 0; j < W; j++) {
            const uint8_t *p = src_row + (Py_ssize_t)cx.bounds[2 * j] * jb->src_sx;
            horizontal_pixel(p, jb->src_sx, cx.kk + (size_t)j * cx.ksize, cx.bounds[2 * j + 1],
                             o + 3 * j);
        }
    }
    /* Vertical pass, then normalise and transpose into the float CHW output. */
    float lut[3][256];
    for (int ch = 0; ch < 3; ch++)
        for (int v = 0; v < 256; v++) lut[ch][v] = (float)v * jb->mul[ch] + jb->add[ch];
    for (int i = 0; i < H; i++) {
        int ymin = cy.bounds[2 * i] - first;
#ifdef HAVE_AVX2_PATH
        if (avx2)
            vertical_row_avx2(tmp + (size_t)ymin * row_bytes, row_bytes, cy.bounds[2 * i + 1],
                              cy.kk + (size_t)i * cy.ksize, line, row_len);
        else
#endif
            vertical_row(tmp + (size_t)ymin * row_bytes, row_bytes, cy.bounds[2 * i + 1],
                         cy.kk + (size_t)i * cy.ksize, line, row_len);
        float *o0 = jb->out + i * jb->out_sy;
        float *o1 = o0 + jb->out_sc, *o2 = o1 + jb->out_sc;
        int j = 0;
#ifdef HAVE_AVX2_PATH
        if (avx2) j = planes_avx2(line, W, o0, o1, o2, jb->mul, jb->add);
#endif
        for (; j < W; j++) {
            o0[j] = lut[0][line[3 * j]];
            o1[j] = lut[1][line[3 * j + 1]];
            o2[j] = lut[2][line[3 * j + 2]];
        }
    }
    ok = 1;
done:
    free(cx.bounds);
    free(cx.kk);
    free(cy.bounds);
    free(cy.kk);
    free(tmp);
    free(line);
    return ok;
}

static int parse_axis(PyObject *o, axis *a) {
    return PyArg_ParseTuple(o, "dlll;an axis is (scale, out_offset, in_size, origin)",
                            &a->scale, &a->out_offset, &a->in_size, &a->origin);
}

/* resize_normalize(src, out, x_axis, y_axis, mul, add) */
static PyObject *resize_normalize(PyObject *self, PyObject *args) {
    PyObject *src_obj, *out_obj, *xo, *yo;
    job jb;
    memset(&jb, 0, sizeof(jb));
    if (!PyArg_ParseTuple(args, "OOOO(fff)(fff)", &src_obj, &out_obj, &xo, &yo, &jb.mul[0],
                          &jb.mul[1], &jb.mul[2], &jb.add[0], &jb.add[1], &jb.add[2]))
        return NULL;
    if (!parse_axis(xo, &jb.ax) || !parse_axis(yo, &jb.ay)) return NULL;
    /* !(x > 0) also refuses NaN; a JPEG is at most 65535 pixels wide, so no real resize
     * shrinks by more (and a larger scale would overflow the filter size). */
    if (!(jb.ax.scale > 0 && jb.ay.scale > 0 && jb.ax.scale < 65536 && jb.ay.scale < 65536)) {
        PyErr_SetString(PyExc_ValueError, "scale must be positive and below 65536");
        return NULL;
    }
    Py_buffer src, out;
    if (PyObject_GetBuffer(src_obj, &src, PyBUF_STRIDES | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_STRIDES | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    char err[256] = "";
    int ok = 0;
    if (src.ndim != 3 || src.itemsize != 1 || src.shape[2] != 4 || src.strides[2] != 1 ||
        src.shape[0] < 1 || src.shape[1] < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "src must be a non-empty (height, width, 4) uint8 RGBX array");
    } else if (out.ndim != 3 || out.itemsize != 4 || strcmp(out.format, "f") != 0 ||
               out.shape[0] != 3 || out.strides[2] != 4 || out.strides[1] % 4 ||
               out.strides[0] % 4 || out.shape[1] < 1 || out.shape[2] < 1 ||
               out.shape[1] > INT_MAX / 4 || out.shape[2] > INT_MAX / 4) {
        PyErr_SetString(PyExc_ValueError,
                        "out must be a non-empty (3, height, width) float32 array with packed"
                        " rows");
    } else {
        jb.src = src.buf;
        jb.src_h = src.shape[0];
        jb.src_w = src.shape[1];
        jb.src_sy = src.strides[0];
        jb.src_sx = src.strides[1];
        jb.out = out.buf;
        jb.out_h = out.shape[1];
        jb.out_w = out.shape[2];
        jb.out_sc = out.strides[0] / 4;
        jb.out_sy = out.strides[1] / 4;
        Py_BEGIN_ALLOW_THREADS
        ok = resample(&jb, err);
        Py_END_ALLOW_THREADS
        if (!ok) PyErr_SetString(PyExc_ValueError, err);
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&out);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"resize_normalize", resize_normalize, METH_VARARGS,
     "resize_normalize(src, out, x_axis, y_axis, mul, add)\n"
     "Antialiased bilinear resample (Pillow-exact) of uint8 RGBX src into float32 CHW out,\n"
     "out[c] = pixel * mul[c] + add[c]. Each axis is (scale, out_offset, in_size, origin)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fused",
                                    "Fused resize + normalise into batch buffers.", -1, methods};

PyMODINIT_FUNC PyInit__fused(void) { return PyModule_Create(&module); }
