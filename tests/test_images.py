"""pagdemo.data.images: every kind of bad or unusual upload becomes RGB in [0, 1] or a clear ImageError."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pagdemo.data import images
from pagdemo.data.images import ImageError, fit_square, load_image, read_image

EXAMPLE = str(Path(__file__).resolve().parents[1] / "pagdemo" / "app" / "examples" / "cat_3543.png")


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, bit_depth: int, colour_type: int, raw: bytes) -> bytes:
    """A PNG written by hand: any header, any (even too short) pixel data."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def huge_png(width: int, height: int) -> bytes:
    """A tiny file whose header claims width x height pixels: a decompression bomb, without the memory."""
    return _png(width, height, 1, 0, bytes(1000))


def _rgb16_png(pixels: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    return _png(pixels.shape[1], pixels.shape[0], 16, 2, raw)


def test_cifar_example_round_trips_exactly():
    x = load_image(EXAMPLE)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    expected = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    assert np.array_equal((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), expected)


def test_path_and_bytes_give_the_same_tensor():
    assert torch.equal(load_image(open(EXAMPLE, "rb").read()), load_image(EXAMPLE))


def test_wide_photo_is_centre_cropped_then_resized():
    a = np.zeros((100, 300, 3), np.uint8)
    a[:, :100] = (255, 0, 0)
    a[:, 100:200] = (0, 255, 0)  # the centre square
    a[:, 200:] = (0, 0, 255)
    x = load_image(_png_bytes(Image.fromarray(a)))
    assert x.shape == (3, 32, 32)
    assert x[1, :, 2:-2].min() > 0.95 and x[0, :, 2:-2].max() < 0.05 and x[2, :, 2:-2].max() < 0.05


def test_stl_size_is_respected():
    assert load_image(EXAMPLE, size=96).shape == (3, 96, 96)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"hello, this is not an image", "not an image"),
        (b"", "not an image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image"),  # EPS would run Ghostscript
        (b"P6\n2 2\n255\n" + bytes(12), "not an image"),  # PPM is valid but not accepted
    ],
)
def test_non_images_are_refused(data, message):
    with pytest.raises(ImageError, match=message):
        read_image(data)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ImageError, match="no file"):
        read_image(tmp_path / "nope.png")


def test_truncated_png_and_jpeg_are_refused():
    png = open(EXAMPLE, "rb").read()
    with pytest.raises(ImageError, match="corrupt or truncated"):
        read_image(png[: len(png) // 2])
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buf, "JPEG")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        read_image(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_png_with_a_bad_crc_is_refused():
    png = bytearray(open(EXAMPLE, "rb").read())
    idat = png.index(b"IDAT")
    png[idat + 10] ^= 0xFF
    with pytest.raises(ImageError, match="corrupt"):
        read_image(bytes(png))


@pytest.mark.parametrize(
    "size, words",
    [
        ((8000, 6000), "8000x6000 = 48 megapixels; the limit is 40"),
        ((40000, 40000), "1600 megapixels; the limit is 40"),
        ((2**31 - 1, 2**31 - 1), "megapixels; the limit is 40"),
    ],
)
def test_huge_images_are_refused_before_decoding_naming_their_size(size, words):
    with pytest.raises(ImageError, match=words):
        read_image(huge_png(*size))


def test_a_truncated_file_is_explained_in_plain_words():
    with pytest.raises(ImageError) as info:
        read_image(open(EXAMPLE, "rb").read()[:300])
    assert "cut short" in str(info.value) and "bytes not processed" not in str(info.value)


def test_files_over_the_byte_limit_are_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(images, "MAX_BYTES", 1000)
    path = tmp_path / "big.png"
    path.write_bytes(_png_bytes(Image.new("RGB", (64, 64))) + bytes(2000))
    with pytest.raises(ImageError, match="MB"):
        read_image(path)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    img, notes = read_image(buf.getvalue())
    assert img.mode == "RGB" and img.getpixel((5, 5)) == (255, 0, 0)
    assert any("3 frames" in n for n in notes)


def test_grayscale_becomes_three_equal_channels():
    img, notes = read_image(_png_bytes(Image.new("L", (32, 32), 77)))
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (77, 77, 77)
    assert any("grayscale" in n for n in notes)


def test_transparency_is_composited_on_white():
    a = np.zeros((32, 32, 4), np.uint8)
    a[:, :16] = (255, 0, 0, 0)  # fully transparent red: must show as white, not red or black
    a[:, 16:] = (0, 0, 255, 255)  # opaque blue
    a[0, 20] = (0, 0, 0, 128)  # half-transparent black on white: mid grey
    img, notes = read_image(_png_bytes(Image.fromarray(a, "RGBA")))
    assert img.getpixel((3, 3)) == (255, 255, 255) and img.getpixel((20, 3)) == (0, 0, 255)
    assert all(abs(v - 127) <= 1 for v in img.getpixel((20, 0)))
    assert any("white" in n for n in notes)


def test_palette_with_transparency_and_grey_alpha():
    p = Image.new("P", (8, 8), 1)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.info["transparency"] = 1
    assert read_image(_png_bytes(p))[0].getpixel((0, 0)) == (255, 255, 255)
    la = Image.new("LA", (8, 8), (0, 0))
    assert read_image(_png_bytes(la))[0].getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_grayscale_is_scaled_not_clipped():
    a = np.array([[0, 32768, 65535]], np.uint16).repeat(3, axis=0)
    img, notes = read_image(_png_bytes(Image.fromarray(a)))
    assert [img.getpixel((i, 0))[0] for i in range(3)] == [0, 128, 255]  # clipping would give 255 for 32768
    assert any("bit" in n for n in notes)


def test_16_bit_rgb_png():
    a = np.zeros((4, 4, 3), np.uint16)
    a[..., 0], a[..., 1] = 65535, 32896  # 32896 = 128 * 257
    img, _ = read_image(_rgb16_png(a))
    assert img.mode == "RGB" and img.getpixel((1, 1)) == (255, 128, 0)


def test_cmyk_jpeg_becomes_the_right_rgb():
    halves = Image.new("CMYK", (32, 16), (0, 0, 0, 0))  # white
    halves.paste(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), (16, 0))  # red
    buf = io.BytesIO()
    halves.save(buf, "JPEG", quality=95)
    img, notes = read_image(buf.getvalue())
    assert img.mode == "RGB"
    assert all(v > 240 for v in img.getpixel((4, 8)))
    r, g, b = img.getpixel((28, 8))
    assert r > 230 and g < 25 and b < 25
    assert any("CMYK" in n for n in notes)


def test_exif_orientation_is_applied():
    a = np.zeros((10, 20, 3), np.uint8)
    a[:, 10:] = 255  # right half white
    exif = Image.Exif()
    exif[0x0112] = 3  # rotated 180 degrees
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    img, _ = read_image(buf.getvalue())
    assert img.getpixel((2, 5))[0] > 200 and img.getpixel((17, 5))[0] < 50


def test_fit_square_keeps_exact_size_untouched():
    img = Image.open(EXAMPLE).convert("RGB")
    assert np.array_equal(np.asarray(fit_square(img, 32)), np.asarray(img))
    assert fit_square(Image.new("RGB", (1, 1)), 32).size == (32, 32)
