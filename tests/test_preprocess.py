"""Preprocessing: exact partial decoding, torchvision-exact transform, declared outputs,
streaming batches, every format and orientation, and bad input."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from classifier import LITE_MEAN, LITE_STD
from conftest import real_jpegs
from images import with_header_size, write_variants
from PIL import Image, ImageOps
from torchvision import transforms as T

from smolql import _jpeg
from smolql.imaging.decode import decode_jpeg
from smolql.ops.geometry import plan_image
from smolql.ops.loader import stream_batches
from smolql.ops.pipeline import ImageRef, Preprocessor, source_info
from smolql.ops.transform import Rect, SourceInfo, TensorSpec, Transform

LITE = Transform(256, 224, LITE_MEAN, LITE_STD)
JPEG_KINDS = [
    "baseline444.jpg",
    "baseline422.jpg",
    "baseline420.jpg",
    "progressive.jpg",
    "gray.jpg",
]
# One 8-bit level after normalisation. Pillow 13 runs the vertical resize pass first for some
# sizes (its PR #9549); SmolQL keeps Pillow's classic horizontal-first order, so those images
# differ from the reference by at most one level in some pixels.
LEVEL = 1 / 255 / LITE_STD[0] + 1e-5


def reference(image: Image.Image, t: Transform = LITE) -> np.ndarray:
    """torchvision's reference transform on a PIL image."""
    tf = T.Compose(
        [T.Resize(t.resize), T.CenterCrop(t.crop), T.ToTensor(), T.Normalize(t.mean, t.std)]
    )
    return tf(image.convert("RGB")).numpy()


def preprocess(refs: list[ImageRef], pre: Preprocessor | None = None, batch_size: int = 32):
    keys, tensors, errors = [], [], []
    for batch in stream_batches(refs, pre or Preprocessor(LITE), batch_size=batch_size):
        keys += batch.keys
        tensors.append(batch.tensor.copy())
        errors += batch.errors
    return keys, np.concatenate(tensors) if tensors else np.empty((0,)), errors


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    return write_variants(real_jpegs()[7], tmp_path_factory.mktemp("pre") / "v")


# -- partial decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*JPEG_KINDS, "cmyk.jpg"])
@pytest.mark.parametrize("denom", [1, 2, 4, 8])
def test_region_decode_equals_the_same_region_of_a_full_decode(variants, name, denom):
    data = variants[name].read_bytes()
    full = decode_jpeg(data, scale_denom=denom)
    h, w = full.shape[:2]
    rng = np.random.default_rng(denom)
    for _ in range(12):
        rw, rh = int(rng.integers(1, w + 1)), int(rng.integers(1, h + 1))
        x, y = int(rng.integers(0, w - rw + 1)), int(rng.integers(0, h - rh + 1))
        part = decode_jpeg(data, scale_denom=denom, region=(x, y, rw, rh))
        np.testing.assert_array_equal(part, full[y : y + rh, x : x + rw])


def test_region_decode_is_exact_on_all_sample_images():
    worst = 0
    for path in real_jpegs()[::5]:
        data = path.read_bytes()
        full = decode_jpeg(data)
        h, w = full.shape[:2]
        part = decode_jpeg(data, region=(w // 5, h // 7, w // 2, h // 2))
        worst = max(
            worst,
            np.abs(
                part.astype(int) - full[h // 7 : h // 7 + h // 2, w // 5 : w // 5 + w // 2]
            ).max(),
        )
    assert worst == 0


def test_fancy_upsampling_edge_effect_without_context(variants):
    """4:2:0 chroma is upsampled from neighbouring samples: cropping columns exactly at the
    region loses the right-hand neighbour, so the region's last column differs. With 1 px of
    context on the left and half an iMCU on the right (the default) the region is exact."""
    data = variants["baseline420.jpg"].read_bytes()
    full = decode_jpeg(data)
    x, y, w, h = 37, 21, 101, 90
    exact = np.empty((h, w, 3), np.uint8)
    _jpeg.decode_into(data, exact, region=(x, y, w, h))
    bare = np.empty((h, w, 3), np.uint8)
    _jpeg.decode_into(data, bare, region=(x, y, w, h), context=False)
    np.testing.assert_array_equal(exact, full[y : y + h, x : x + w])
    diff = np.abs(bare.astype(int) - full[y : y + h, x : x + w]).max(axis=(0, 2))
    assert diff.max() > 0
    assert set(np.nonzero(diff)[0]) <= {0, w - 1}  # only at the region's edges


def test_decoder_writes_into_a_strided_caller_buffer():
    data = real_jpegs()[0].read_bytes()
    canvas = np.zeros((2, 400, 600, 4), np.uint8)
    _jpeg.decode_into(data, canvas[1, 10:110, 20:220], region=(5, 6, 200, 100))
    full = decode_jpeg(data)
    np.testing.assert_array_equal(canvas[1, 10:110, 20:220, :3], full[6:106, 5:205])
    assert (canvas[1, 10:110, 20:220, 3] == 255).all() and canvas[0].sum() == 0


# -- the standard transform ----------------------------------------------------------------------


@pytest.mark.slow
def test_transform_equals_torchvision_reference_and_classifier_agrees(lite0):
    files = real_jpegs()
    keys, ours, errors = preprocess([ImageRef(i, str(f), 1) for i, f in enumerate(files)])
    assert errors == [] and keys == list(range(len(files)))
    theirs = np.stack([reference(Image.open(f)) for f in files])
    n = len(files)
    mean_abs = float(np.abs(ours - theirs).mean())
    assert mean_abs < 1e-5 and np.abs(ours - theirs).max() <= LEVEL, f"mean abs {mean_abs:.3g}"
    exact = sum(int(np.abs(ours[i] - theirs[i]).max() < 1e-5) for i in range(n))
    assert exact >= n - n // 100, f"bit-exact (up to float rounding) on {exact}/{n} images"
    agree = sum(
        int((lite0.top1(ours[i : i + 50]) == lite0.top1(theirs[i : i + 50])).sum())
        for i in range(0, n, 50)
    )
    assert agree >= n - n // 100, f"top-1 identical on {agree}/{n} images"


def test_dct_scaling_auto_never_enlarges_and_forced_scale_is_honoured():
    t = Transform(256, 224)
    big = SourceInfo("jpeg", 2000, 1500)
    auto = plan_image(big, t, scale_denom="auto")
    assert auto.decode.scale_denom == 4  # 1500 / 4 = 375 >= 256, 1500 / 8 < 256
    assert plan_image(SourceInfo("jpeg", 500, 375), t, scale_denom="auto").decode.scale_denom == 1
    assert plan_image(SourceInfo("jpeg", 500, 375), t, scale_denom=2).decode.scale_denom == 2
    assert plan_image(SourceInfo("png", 2000, 1500), t, scale_denom=2).decode.scale_denom == 1


def test_dct_scaled_decode_stays_close_to_the_reference():
    files = real_jpegs()[:40]
    _, scaled, _ = preprocess(
        [ImageRef(i, str(f), 1) for i, f in enumerate(files)], Preprocessor(LITE, scale_denom=2)
    )
    theirs = np.stack([reference(Image.open(f)) for f in files])
    assert 0.005 < np.abs(scaled - theirs).mean() < 0.15  # lossy, but the same picture


# -- declared outputs ----------------------------------------------------------------------------


def test_operators_declare_their_outputs_before_running():
    data = real_jpegs()[2].read_bytes()
    pre = Preprocessor(LITE)
    plan = pre.plan(data, ImageRef(0, "x", 1))
    assert pre.output == plan.output() == TensorSpec((3, 224, 224), "float32", "CHW")
    declared = plan.decode.output()
    decoded = plan.decode.apply(data)
    assert decoded.shape == declared.shape and declared.dtype == "uint8"
    assert plan.decoded_pixels < 500 * 375  # only the centre crop's region is decoded
    out = np.empty(plan.output().shape, np.float32)
    plan.run(data, out)


def test_a_chain_that_cannot_fit_is_rejected_before_running():
    from smolql.ops.steps import Crop

    plan = plan_image(SourceInfo("png", 100, 80), Transform(64, 56))
    bad = type(plan)(plan.decode, (Crop(Rect(50, 50, 60, 10)),), plan.resize)
    with pytest.raises(ValueError, match="outside"):
        bad.output()


# -- streaming -----------------------------------------------------------------------------------


def test_batches_stream_in_order_with_bounded_buffers():
    files = real_jpegs()[:100]
    refs = [ImageRef(f.name, str(f), 1) for f in files]
    buffers, seen = set(), []
    for batch in stream_batches(refs, Preprocessor(LITE), batch_size=16, prefetch=2):
        assert batch.tensor.shape[1:] == (3, 224, 224) and len(batch.keys) <= 16
        buffers.add(batch.tensor.__array_interface__["data"][0])
        seen += batch.keys
    assert seen == [f.name for f in files]
    assert len(buffers) <= 3  # prefetch + 1 buffers, reused


class Counting(Preprocessor):
    """A preprocessor that counts the images it has decoded (from several decoding threads:
    ``+=`` alone could lose a count)."""

    def __init__(self, transform: Transform) -> None:
        super().__init__(transform)
        self.count = 0
        self.lock = threading.Lock()

    def run(self, ref, out):
        with self.lock:
            self.count += 1
        return super().run(ref, out)


def test_taking_turns_decodes_a_batch_only_when_asked_for():
    files = real_jpegs()[:48]
    refs = [ImageRef(f.name, str(f), 1) for f in files]
    pre = Counting(LITE)
    buffers, seen = set(), []
    for n, batch in enumerate(stream_batches(refs, pre, batch_size=16, prefetch=0, workers=2)):
        time.sleep(0.2)  # a decoder working ahead would have started the next batch by now
        assert pre.count == 16 * (n + 1)  # this batch, and nothing of the next
        buffers.add(batch.tensor.__array_interface__["data"][0])
        seen += batch.keys
    assert seen == [f.name for f in files]
    assert len(buffers) == 1  # one buffer: decoding and the caller take turns on it


def test_a_turn_of_several_batches_is_decoded_before_the_first_is_handed_out():
    files = real_jpegs()[:56]
    refs = [ImageRef(f.name, str(f), 1) for f in files]
    pre = Counting(LITE)
    buffers, seen, counts = set(), [], []
    batches = stream_batches(refs, pre, batch_size=8, prefetch=0, workers=2, turn=3)
    for batch in batches:
        time.sleep(0.1)  # a decoder working ahead would have started the next turn by now
        counts.append(pre.count)
        buffers.add(batch.tensor.__array_interface__["data"][0])
        seen += batch.keys
    assert seen == [f.name for f in files]
    # 7 batches: turns of 3, 3 and 1; while the caller holds a turn nothing else is decoded
    assert counts == [24, 24, 24, 48, 48, 48, 56]
    assert len(buffers) == 3


def test_stopping_early_in_a_turn_does_not_hang():
    refs = [ImageRef(i, str(f), 1) for i, f in enumerate(real_jpegs())]
    batches = stream_batches(refs, Preprocessor(LITE), batch_size=8, prefetch=0, turn=4)
    for n, _batch in enumerate(batches):
        if n == 5:
            break
    batches.close()


def test_stopping_early_does_not_hang():
    refs = [ImageRef(i, str(f), 1) for i, f in enumerate(real_jpegs())]
    for n, _batch in enumerate(stream_batches(refs, Preprocessor(LITE), batch_size=8)):
        if n == 2:
            break


# -- formats and orientation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        *JPEG_KINDS,
        "rgb8.png",
        "palette.png",
        "alpha.png",
        "image.webp",
        "image.bmp",
        "image.tiff",
        "rotated6.jpg",
        "rotated3.jpg",
        "rgb16.png",
        "cmyk.jpg",
    ],
)
def test_every_format_matches_the_reference_on_the_upright_image(variants, name):
    path = variants[name]
    _, ours, errors = preprocess([ImageRef(name, str(path))])
    assert errors == []
    upright = ImageOps.exif_transpose(Image.open(path))
    tolerance = 2.5 * LEVEL if name == "cmyk.jpg" else LEVEL  # CMYK->RGB rounding
    assert np.abs(ours[0] - reference(upright)).max() <= tolerance


def test_16_bit_gray_png_uses_the_high_byte(variants):
    path = variants["gray16.png"]
    _, ours, _ = preprocess([ImageRef(0, str(path))])
    high = (np.asarray(Image.open(path), dtype=np.uint16) >> 8).astype(np.uint8)
    expected = reference(Image.fromarray(high))
    assert np.abs(ours[0] - expected).max() <= LEVEL


@pytest.mark.parametrize("name", ["rotated6.jpg", "rotated3.jpg", "baseline420.jpg"])
def test_roi_in_displayed_coordinates_is_mapped_to_stored_ones(variants, name):
    path = variants[name]
    upright = ImageOps.exif_transpose(Image.open(path))
    roi = Rect(30, 45, upright.width // 2, upright.height // 3)
    pre = Preprocessor(Transform(128, 112, LITE_MEAN, LITE_STD))
    _, ours, errors = preprocess([ImageRef(0, str(path), roi=roi)], pre)
    assert errors == []
    box = (roi.x, roi.y, roi.x + roi.w, roi.y + roi.h)
    expected = reference(upright.crop(box), Transform(128, 112, LITE_MEAN, LITE_STD))
    assert np.abs(ours[0] - expected).max() <= LEVEL
    plan = pre.plan(path.read_bytes(), ImageRef(0, str(path), roi=roi))
    assert plan.decoded_pixels < roi.area  # decoded only what the ROI's centre crop needs


def test_orientation_probe_matches_catalog_metadata(variants):
    data = variants["rotated6.jpg"].read_bytes()
    assert source_info(data, ImageRef(0, "x")).orientation == 6
    assert source_info(data, ImageRef(0, "x", orientation=1)).orientation == 1


# -- bad input -----------------------------------------------------------------------------------


def test_bad_images_yield_per_image_errors_and_the_rest_of_the_batch(tmp_path):
    good = real_jpegs()[:6]
    data = good[0].read_bytes()
    bad = {
        "truncated.jpg": data[: len(data) // 2],
        "corrupt.jpg": data[:600] + bytes(range(256)) * 20,
        "huge.jpg": with_header_size(data, 60000, 60000),
        "text.png": b"not an image at all",
        "empty.jpg": b"",
    }
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
    refs = [ImageRef(f.name, str(f), 1) for f in good[:3]]
    refs += [ImageRef(n, str(tmp_path / n), 1) for n in bad]
    refs += [ImageRef(f.name, str(f), 1) for f in good[3:]]
    refs.append(ImageRef("missing.jpg", str(tmp_path / "missing.jpg"), 1))
    keys, tensor, errors = preprocess(refs, batch_size=16)
    assert keys == [f.name for f in good] and tensor.shape == (6, 3, 224, 224)
    reasons = {e.key: e.reason for e in errors}
    assert set(reasons) == {*bad, "missing.jpg"}
    assert all(e.path.endswith(str(e.key)) for e in errors)
    assert "pixel limit" in reasons["huge.jpg"]
    assert "Premature end" in reasons["truncated.jpg"]
    assert "No such file" in reasons["missing.jpg"]
    expected = np.stack([reference(Image.open(f)) for f in good])
    assert np.abs(tensor - expected).max() <= LEVEL  # good images unharmed by their neighbours
