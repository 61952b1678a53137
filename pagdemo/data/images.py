"""Safe loading of untrusted images (uploads, image folders) as 8-bit RGB, or an ImageError for the sender:
a few raster formats only (never EPS, which runs Ghostscript), the pixel count checked from the header,
the file verified, then decoded in full (a truncated file is an error), every pixel mode made RGB."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")  # JPEG includes MPO, which many phones write
MAX_PIXELS = 40_000_000  # 40 MP: any phone photo; a 40 MP RGB image decodes to 120 MB
MAX_BYTES = 25 * 1024 * 1024  # file size, for callers that pass a path (the app's upload limit is lower)
SRGB = ImageCms.createProfile("sRGB")
Image.init()  # register every plugin, so `formats=FORMATS` finds WEBP and TIFF


class ImageError(ValueError):
    """An input that is not a usable image; the message is meant for the person who gave it."""


def read_bytes(source: str | Path | bytes) -> bytes:
    """The raw file, refused early when it is missing or larger than MAX_BYTES."""
    path = None if isinstance(source, bytes) else Path(source)
    if path is not None and not path.is_file():
        raise ImageError(f"no file at {path}")
    size = len(source) if path is None else path.stat().st_size
    if size > MAX_BYTES:
        raise ImageError(f"the file is {size / 2**20:.1f} MB; the limit is {MAX_BYTES / 2**20:.0f} MB")
    return source if path is None else path.read_bytes()


def _open(data: bytes) -> Image.Image:
    """Open (lazily: header only) bytes as one of FORMATS, refusing a huge image before a pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageError(f"not an image file, or not a supported format ({', '.join(FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        found = re.search(r"\((\d+) pixels\)", str(e))  # Pillow names the pixel count, not the size
        size = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "too many pixels"
        raise ImageError(f"the image is {size}; the limit is {MAX_PIXELS / 1e6:.0f} megapixels") from None
    except (OSError, SyntaxError, ValueError) as e:  # a header Pillow recognizes but cannot parse
        raise ImageError(f"the image file is corrupt ({e})") from None
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(f"the image is empty ({w}x{h} pixels)")
    if w * h > MAX_PIXELS:
        raise ImageError(
            f"the image is {w}x{h} = {w * h / 1e6:.0f} megapixels; the limit is {MAX_PIXELS / 1e6:.0f}"
        )
    return img


def _damage(e: Exception) -> str:
    """A broken file in plain words: Pillow's phrases ("0 bytes not processed") mean nothing to a visitor."""
    text = str(e).lower()
    if "truncated" in text or "end of file" in text or "not enough data" in text:
        return (
            "the image file is cut short: it ends before the picture does (was it fully downloaded or "
            "copied?); the file is corrupt or truncated"
        )
    if "crc" in text or "checksum" in text:
        return "the image file is damaged: a checksum inside it does not match (corrupt or truncated)"
    return "the image file is damaged and cannot be decoded (corrupt or truncated)"


def _sixteen_bit_to_8(img: Image.Image) -> Image.Image:
    """Scale 16-bit (and 32-bit integer / float) grayscale to 8 bit instead of clipping it to white."""
    a = np.asarray(img).astype(np.float64)
    if img.mode == "F" and a.max(initial=0) <= 1.0:
        scale = 1.0  # float images in [0, 1]
    elif img.mode.startswith("I;16") or a.max(initial=0) > 255:
        scale = 65535.0  # 16-bit samples (PNG/TIFF), also when Pillow reports them as mode "I"
    else:
        scale = 255.0
    return Image.fromarray(np.clip(np.rint(a / scale * 255), 0, 255).astype(np.uint8), "L")


def _to_srgb(img: Image.Image, notes: list[str]) -> Image.Image:
    """Colour-manage through an embedded ICC profile (CMYK, Display P3...); plain conversion otherwise."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
        out = ImageCms.profileToProfile(img, profile, SRGB, outputMode="RGB")
        how = "through its colour profile"
    except (KeyError, ImageCms.PyCMSError, OSError, ValueError):  # no profile, or a broken one
        out, how = img.convert("RGB"), "(no colour profile: colours are approximate)"
    if img.mode == "CMYK":
        notes.append(f"CMYK image converted to RGB {how}")
    return out


def to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    """Any Pillow mode to 8-bit RGB (noted): alpha composited on white, 16-bit scaled, palettes expanded."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        notes.append(f"{'floating-point' if img.mode == 'F' else 'high bit-depth'} grayscale scaled to 8 bit")
        img = _sixteen_bit_to_8(img)
    if img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (img.mode == "P" and "transparency" in img.info):
        notes.append("transparent pixels shown on white")
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    if img.mode in ("L", "1"):
        notes.append("grayscale image: the model sees three equal channels")
    if img.mode in ("RGB", "CMYK"):
        return _to_srgb(img, notes)
    try:
        return img.convert("RGB")
    except ValueError:  # e.g. LAB, which Pillow cannot convert directly
        raise ImageError(f"unsupported pixel mode {img.mode!r}") from None


def read_image(source: str | Path | bytes) -> tuple[Image.Image, list[str]]:
    """A path or bytes as an upright 8-bit RGB image and notes for the user, or an ImageError."""
    data = read_bytes(source)
    img = _open(data)
    try:
        img.verify()  # checks PNG chunk CRCs and the like; the object is unusable afterwards
        img = Image.open(io.BytesIO(data), formats=FORMATS)  # opened once already: only decoding can fail
        frames = getattr(img, "n_frames", 1)  # counting them returns to the first, the one decoded
        img.load()
    except Exception as e:  # noqa: BLE001 (truncated data, bad CRC, broken LZW stream: all one to a user)
        raise ImageError(_damage(e)) from None
    notes = [f"animated image with {frames} frames: using the first frame"] if frames > 1 else []
    try:
        img = ImageOps.exif_transpose(img)  # phone photos are stored sideways with an EXIF rotation
    except Exception:  # noqa: BLE001 (a malformed EXIF block is not worth refusing the picture for)
        notes.append("could not apply the EXIF orientation")
    return to_rgb(img, notes), notes


def fit_square(img: Image.Image, size: int = 32) -> Image.Image:
    """Centre-crop to a square and resize (antialiased bicubic) to what the model sees; 32x32 stays exact."""
    return ImageOps.fit(img, (size, size))  # a square of that size comes back as an untouched copy


def model_input(img: Image.Image, size: int = 32) -> torch.Tensor:
    """What the model sees of an RGB image: centre-cropped and resized, (3, size, size) float in [0, 1]."""
    x = torch.from_numpy(np.asarray(fit_square(img, size), dtype=np.float32) / 255.0)
    return x.permute(2, 0, 1).contiguous()


def load_image(source: str | Path | bytes, size: int = 32) -> torch.Tensor:
    """What the model sees of an image file: (3, size, size) float in [0, 1], or an ImageError."""
    return model_input(read_image(source)[0], size)
