/* SmolQL's JPEG decoder: libjpeg-turbo with DCT scaling and region (ROI) decoding.
 *
 * Decodes straight into a caller-provided buffer (any writable buffer shaped (h, w, 3) uint8
 * for RGB or (h, w, 4) for RGBX, with packed pixels; rows may be strided, so a decode can land in a slot of a batch buffer).
 * The GIL is released while libjpeg works. Corrupt data raises ValueError with libjpeg's
 * message; warnings are errors too, except the harmless "extraneous bytes before marker".
 *
 * Region decoding: columns via jpeg_crop_scanline (iMCU-aligned, then trimmed here), rows
 * above via jpeg_skip_scanlines, and decoding stops after the last needed row. libjpeg's fancy
 * upsampling looks at neighbouring chroma samples, so the columns are widened by 1 px on the
 * left and half an iMCU on the right before cropping; the trimmed result then equals the same
 * region of a full decode.
 *
 * Scans: a progressive JPEG may legally hold about 2,000 scans, each a pass over the image's
 * blocks; encoders write about 10 (cjpeg's own script reader stops at 100). A file with more
 * than MAX_SCANS is refused as it reaches scan MAX_SCANS + 1, so decode time stays bounded
 * by MAX_SCANS passes over at most max_image_pixels.
 */
#define PY_SSIZE_T_CLEAN
#define BLOCK_ROWS 16
#include <Python.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} error_mgr;

static void on_error(j_common_ptr cinfo) {
    error_mgr *err = (error_mgr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    /* level -1 is a warning about corrupt data: treat it as an error, because libjpeg would
     * otherwise return a grey-filled image for a truncated file. */
    if (level == -1 && cinfo->err->msg_code != JWRN_EXTRANEOUS_DATA) {
        on_error(cinfo);
    }
}

#define MAX_SCANS 500

typedef struct {
    struct jpeg_decompress_struct cinfo;
    error_mgr err;
    struct jpeg_progress_mgr progress;
} decoder;

static void on_progress(j_common_ptr cinfo) {
    j_decompress_ptr di = (j_decompress_ptr)cinfo;
    if (di->input_scan_number > MAX_SCANS) {
        error_mgr *err = (error_mgr *)cinfo->err;
        snprintf(err->message, JMSG_LENGTH_MAX,
                 "progressive JPEG with more than %d scans (decoding time grows with each)",
                 MAX_SCANS);
        longjmp(err->jump, 1);
    }
}

static void decoder_init(decoder *d) {
    memset(d, 0, sizeof(*d));
    d->cinfo.err = jpeg_std_error(&d->err.pub);
    d->err.pub.error_exit = on_error;
    d->err.pub.emit_message = on_message;
    jpeg_create_decompress(&d->cinfo);
    d->progress.progress_monitor = on_progress;
    d->cinfo.progress = &d->progress;
}

/* Must run after setjmp: an empty input makes jpeg_mem_src raise. */
static void read_header(decoder *d, const Py_buffer *src) {
    jpeg_mem_src(&d->cinfo, src->buf, (unsigned long)src->len);
    jpeg_read_header(&d->cinfo, TRUE);
}

static const char *color_name(J_COLOR_SPACE cs) {
    switch (cs) {
    case JCS_GRAYSCALE: return "gray";
    case JCS_RGB: return "rgb";
    case JCS_YCbCr: return "ycbcr";
    case JCS_CMYK: return "cmyk";
    case JCS_YCCK: return "ycck";
    default: return "unknown";
    }
}

/* info(data) -> dict of header facts; output sizes for each DCT scale 1/1, 1/2, 1/4, 1/8. */
static PyObject *jpeg_info(PyObject *self, PyObject *args) {
    Py_buffer src;
    if (!PyArg_ParseTuple(args, "y*", &src)) return NULL;
    decoder d;
    volatile int ok = 1;
    int h_samp = 1, v_samp = 1;
    decoder_init(&d);
    Py_BEGIN_ALLOW_THREADS
    if (setjmp(d.err.jump)) {
        ok = 0;
    } else {
        read_header(&d, &src);
        h_samp = d.cinfo.max_h_samp_factor;
        v_samp = d.cinfo.max_v_samp_factor;
    }
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, d.err.message);
    } else {
        PyObject *samp = PyList_New(d.cinfo.num_components);
        for (int i = 0; samp && i < d.cinfo.num_components; i++) {
            jpeg_component_info *c = &d.cinfo.comp_info[i];
            PyList_SET_ITEM(samp, i, Py_BuildValue("(ii)", c->h_samp_factor, c->v_samp_factor));
        }
        result = Py_BuildValue(
            "{s:I,s:I,s:i,s:s,s:O,s:N,s:i,s:i,s:O}",
            "width", d.cinfo.image_width, "height", d.cinfo.image_height,
            "components", d.cinfo.num_components, "color_space",
            color_name(d.cinfo.jpeg_color_space), "progressive",
            d.cinfo.progressive_mode ? Py_True : Py_False, "sampling", samp,
            "mcu_width", 8 * h_samp, "mcu_height", 8 * v_samp, "adobe",
            d.cinfo.saw_Adobe_marker ? Py_True : Py_False);
    }
    jpeg_destroy_decompress(&d.cinfo);
    PyBuffer_Release(&src);
    return result;
}

static void cmyk_to_rgb(const JSAMPLE *in, JSAMPLE *out, JDIMENSION n, int inverted,
                        int channels) {
    for (JDIMENSION i = 0; i < n; i++, in += 4, out += channels) {
        int c = in[0], m = in[1], y = in[2], k = in[3];
        if (!inverted) { c = 255 - c; m = 255 - m; y = 255 - y; k = 255 - k; }
        out[0] = (JSAMPLE)((c * k + 127) / 255);
        out[1] = (JSAMPLE)((m * k + 127) / 255);
        out[2] = (JSAMPLE)((y * k + 127) / 255);
        if (channels == 4) out[3] = 255;
    }
}

typedef struct {
    unsigned int denom, x, y, w, h; /* region in scaled output pixels; w == 0: everything */
    int fancy;
    int context; /* widen the column crop for the upsampler's neighbours (exact results) */
} request;

typedef struct {
    unsigned char *buf;   /* NULL: only compute the output size */
    int channels;         /* 3 (RGB) or 4 (RGBX, X = 255) */
    Py_ssize_t stride;    /* bytes between rows */
    Py_ssize_t height, width;
    JSAMPLE *row;         /* scratch row, freed by the caller even after an error */
} target;

/* Decode into t->buf. Runs without the GIL; errors longjmp out. Sets *out_w, *out_h. */
static int decode_region(decoder *d, const Py_buffer *src, const request *r, target *t,
                         unsigned int *out_w, unsigned int *out_h) {
    struct jpeg_decompress_struct *ci = &d->cinfo;
    read_header(d, src);
    int cmyk = ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK;
    ci->out_color_space = cmyk ? JCS_CMYK : (t->channels == 4 ? JCS_EXT_RGBX : JCS_RGB);
    ci->scale_num = 1;
    ci->scale_denom = r->denom;
    ci->do_fancy_upsampling = r->fancy ? TRUE : FALSE;
    ci->dct_method = JDCT_ISLOW;
    jpeg_calc_output_dimensions(ci);
    unsigned int full_w = ci->output_width, full_h = ci->output_height;
    unsigned int x = 0, y = 0, w = full_w, h = full_h;
    if (r->w) {
        if (r->x + r->w > full_w || r->y + r->h > full_h || r->h == 0) {
            snprintf(d->err.message, JMSG_LENGTH_MAX,
                     "region (%u, %u, %u, %u) is outside the %ux%u image", r->x, r->y, r->w,
                     r->h, full_w, full_h);
            return 0;
        }
        x = r->x; y = r->y; w = r->w; h = r->h;
    }
    *out_w = w; *out_h = h;
    if (t->buf == NULL) return 1;
    if (t->height != (Py_ssize_t)h || t->width != (Py_ssize_t)w) {
        snprintf(d->err.message, JMSG_LENGTH_MAX,
                 "out has shape (%zd, %zd) but the decode is (%u, %u)", t->height, t->width,
                 h, w);
        return 0;
    }
    jpeg_start_decompress(ci);
    unsigned int left = 0;
    if (w < full_w) {
        unsigned int imcu = ci->max_h_samp_factor * ci->min_DCT_scaled_size;
        JDIMENSION cx = x > 0 && r->context ? x - 1 : x;
        JDIMENSION cend = x + w + (r->context ? imcu / 2 : 0);
        if (cend > full_w) cend = full_w;
        JDIMENSION cw = cend - cx;
        jpeg_crop_scanline(ci, &cx, &cw);
        left = x - cx;
    }
    if (y > 0) jpeg_skip_scanlines(ci, y);
    int channels = ci->output_components;
    /* Read a block of rows per call (libjpeg works an iMCU row at a time), into scratch rows
     * wide enough for the cropped output, then copy the wanted columns out. */
    size_t scratch_row = (size_t)channels * ci->output_width;
    t->row = malloc(scratch_row * BLOCK_ROWS + 64);
    if (t->row == NULL) {
        strcpy(d->err.message, "out of memory");
        return 0;
    }
    JSAMPROW rows[BLOCK_ROWS];
    for (int k = 0; k < BLOCK_ROWS; k++) rows[k] = t->row + (size_t)k * scratch_row;
    unsigned int done = 0;
    while (done < h) {
        unsigned int want = h - done < BLOCK_ROWS ? h - done : BLOCK_ROWS;
        unsigned int got = jpeg_read_scanlines(ci, rows, want);
        if (got == 0) {
            strcpy(d->err.message, "the decoder returned no rows");
            return 0;
        }
        for (unsigned int k = 0; k < got; k++) {
            unsigned char *dst = t->buf + (Py_ssize_t)(done + k) * t->stride;
            if (cmyk) {
                cmyk_to_rgb(rows[k] + (size_t)left * 4, dst, w, ci->saw_Adobe_marker,
                            t->channels);
            } else {
                memcpy(dst, rows[k] + (size_t)left * channels, (size_t)w * channels);
            }
        }
        done += got;
    }
    jpeg_abort_decompress(ci);
    return 1;
}

static int parse_request(PyObject *region, unsigned int denom, int fancy, int context,
                         request *r) {
    memset(r, 0, sizeof(*r));
    r->context = context;
    if (denom != 1 && denom != 2 && denom != 4 && denom != 8) {
        PyErr_SetString(PyExc_ValueError, "scale_denom must be 1, 2, 4 or 8");
        return 0;
    }
    r->denom = denom;
    r->fancy = fancy;
    if (region != Py_None &&
        !PyArg_ParseTuple(region, "IIII;region must be (x, y, width, height)", &r->x, &r->y,
                          &r->w, &r->h)) {
        return 0;
    }
    if (region != Py_None && r->w == 0) {
        PyErr_SetString(PyExc_ValueError, "region width must be positive");
        return 0;
    }
    return 1;
}

/* Run one decode (or size query) with or without the GIL; 1 on success. */
static int run(const Py_buffer *src, const request *r, target *t, unsigned int *w,
               unsigned int *h, char *message) {
    decoder d;
    volatile int ok = 0;
    decoder_init(&d);
    if (setjmp(d.err.jump) == 0) ok = decode_region(&d, src, r, t, w, h);
    jpeg_destroy_decompress(&d.cinfo);
    free(t->row);
    t->row = NULL;
    if (!ok) memcpy(message, d.err.message, JMSG_LENGTH_MAX);
    return ok;
}

/* output_size(data, scale_denom=1, region=None) -> (width, height) of what decode writes. */
static PyObject *jpeg_output_size(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"data", "scale_denom", "region", NULL};
    Py_buffer src;
    unsigned int denom = 1, w = 0, h = 0;
    PyObject *region = Py_None;
    char message[JMSG_LENGTH_MAX];
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|IO", names, &src, &denom, &region))
        return NULL;
    request r;
    target t = {NULL, 3, 0, 0, 0, NULL};
    int ok = parse_request(region, denom, 1, 1, &r);
    if (ok && !run(&src, &r, &t, &w, &h, message)) {
        PyErr_SetString(PyExc_ValueError, message);
        ok = 0;
    }
    PyBuffer_Release(&src);
    return ok ? Py_BuildValue("(II)", w, h) : NULL;
}

/* decode_into(data, out, scale_denom=1, region=None, fancy_upsampling=True, context=True)
 * -> (w, h). context=False crops columns without the upsampler's neighbours: only useful to
 * show the edge effect that context removes. */
static PyObject *jpeg_decode_into(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"data",  "out", "scale_denom", "region", "fancy_upsampling",
                            "context", NULL};
    Py_buffer src, dst;
    PyObject *out;
    unsigned int denom = 1, w = 0, h = 0;
    PyObject *region = Py_None;
    int fancy = 1, context = 1, ok;
    char message[JMSG_LENGTH_MAX];
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*O|IOpp", names, &src, &out, &denom, &region,
                                     &fancy, &context))
        return NULL;
    if (PyObject_GetBuffer(out, &dst, PyBUF_WRITABLE | PyBUF_STRIDES) < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    request r;
    ok = parse_request(region, denom, fancy, context, &r);
    if (ok && (dst.ndim != 3 || dst.itemsize != 1 || (dst.shape[2] != 3 && dst.shape[2] != 4) ||
               dst.strides[2] != 1 || dst.strides[1] != dst.shape[2])) {
        PyErr_SetString(PyExc_ValueError,
                        "out must be a (height, width, 3 or 4) uint8 array with packed pixels");
        ok = 0;
    }
    if (ok) {
        target t = {dst.buf, (int)dst.shape[2], dst.strides[0], dst.shape[0], dst.shape[1], NULL};
        Py_BEGIN_ALLOW_THREADS
        ok = run(&src, &r, &t, &w, &h, message);
        Py_END_ALLOW_THREADS
        if (!ok) PyErr_SetString(PyExc_ValueError, message);
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return ok ? Py_BuildValue("(II)", w, h) : NULL;
}

static PyMethodDef methods[] = {
    {"info", jpeg_info, METH_VARARGS, "info(data) -> dict: header facts of a JPEG."},
    {"output_size", (PyCFunction)(void (*)(void))jpeg_output_size, METH_VARARGS | METH_KEYWORDS,
     "output_size(data, scale_denom=1, region=None) -> (width, height)."},
    {"decode_into", (PyCFunction)(void (*)(void))jpeg_decode_into, METH_VARARGS | METH_KEYWORDS,
     "decode_into(data, out, scale_denom=1, region=None, fancy_upsampling=True, context=True)"
     " -> (w, h).\n"
     "Decode RGB pixels of a JPEG (or a region of it, in scaled output pixels) into out."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpeg",
                                    "libjpeg-turbo region and DCT-scaled decoding.", -1, methods};

PyMODINIT_FUNC PyInit__jpeg(void) { return PyModule_Create(&module); }
