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


def _read_bytes(source: str | Path | bytes) -> bytes:
    """The raw file, refused early when it is missing or larger than MAX_BYTES."""
    path = None if isinstance(source, bytes) else Path(source)
    if path is not None and not path.is_file():
        raise ImageError(f"no file at {path}")
    size = len(source) if path is None else path.stat().st_size
    if size > MAX_BYTES:
        raise ImageError(f"the file is {size / 2**20:.1f} MB; the limit is {MAX_BYTES / 2**20:.0f} MB")
    return source if path is None else path.read_bytes()


def _open(data: bytes) -> Image.Image:
    """Open (lazily: header only) bytes as one of FORMATS."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageError(f"not an image file, or not a supported format ({', '.join(FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        found = re.search(r"\((\d+) pixels\)", str(e))  # Pillow names the pixel count, not the size
        size = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "too many pixels"
        raise ImageError(f"the image is {size}; the limit is {MAX_PIXELS / 1e6:.0f} megapixels") from None
    except (OSError, SyntaxError, ValueError) as e:  # a header Pillow recognizes but cannot parse
        raise ImageError(f"the image file is corrupt ({e})") from None


def _check_size(img: Image.Image) -> None:
    """Refuse a huge image from its header, before a single pixel is decoded."""
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(f"the image is empty ({w}x{h} pixels)")
    if w * h > MAX_PIXELS:
        raise ImageError(
            f"the image is {w}x{h} = {w * h / 1e6:.0f} megapixels; the limit is {MAX_PIXELS / 1e6:.0f}"
        )


def _decode(data: bytes) -> tuple[Image.Image, list[str]]:
    """Verify, then reopen and fully decode the first frame; notes say what was done to the file."""
    img = _open(data)
    _check_size(img)
    notes = []
    try:
        img.verify()  # checks PNG chunk CRCs and the like; the object is unusable afterwards
        img = _open(data)
        frames = getattr(img, "n_frames", 1)
        if frames > 1:
            notes.append(f"animated image with {frames} frames: using the first frame")
            img.seek(0)
        img.load()
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 (truncated data, bad CRC, broken LZW stream: all one to a user)
        raise ImageError(_damage(e)) from None
    return img, notes


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


def size_warnings(w: int, h: int, side: int) -> list[str]:
    """Warnings for images the model can barely use: tiny ones, and ones so long the crop keeps a sliver."""
    notes = []
    if max(w, h) < side // 2:
        notes.append(
            f"**Warning:** at {w}x{h} the image holds almost nothing: the model sees it blown up to "
            f"{side}x{side}, {side * side // max(1, w * h)} model pixels for each of its pixels."
        )
    if max(w, h) > 4 * min(w, h):
        long, short = ("wide", "tall") if w > h else ("tall", "wide")
        notes.append(
            f"**Warning:** the image is {max(w, h) / min(w, h):.0f} times as {long} as it is {short}: "
            f"the square crop keeps only {100 * min(w, h) / max(w, h):.0f}% of it."
        )
    return notes


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
    icc = img.info.get("icc_profile")
    if icc and img.mode in ("RGB", "CMYK"):
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            out = ImageCms.profileToProfile(img, profile, SRGB, outputMode="RGB")
            if img.mode == "CMYK":
                notes.append("CMYK image converted to RGB through its colour profile")
            return out
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: fall back to Pillow's plain conversion below
    if img.mode == "CMYK":
        notes.append("CMYK image converted to RGB (no colour profile: colours are approximate)")
    return img.convert("RGB")


def to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    """Any Pillow mode to 8-bit RGB (noted): alpha composited on white, 16-bit scaled, palettes expanded."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        notes.append(f"{'floating-point' if img.mode == 'F' else 'high bit-depth'} grayscale scaled to 8 bit")
        img = _sixteen_bit_to_8(img)
    if img.mode in ("RGBA", "RGBa", "LA", "La", "PA"):  # with an alpha channel
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


def read_image(source: str | Path | bytes | Image.Image) -> tuple[Image.Image, list[str]]:
    """A path, bytes or PIL image as an upright 8-bit RGB image and notes for the user, or an ImageError."""
    if isinstance(source, Image.Image):
        _check_size(source)
        img, notes = source, []
    else:
        img, notes = _decode(_read_bytes(source))
    try:
        img = ImageOps.exif_transpose(img)  # phone photos are stored sideways with an EXIF rotation
    except Exception:  # noqa: BLE001 (a malformed EXIF block is not worth refusing the picture for)
        notes.append("could not apply the EXIF orientation")
    return to_rgb(img, notes), notes


def fit_square(img: Image.Image, size: int = 32) -> Image.Image:
    """Centre-crop to a square and resize (antialiased bicubic) to what the model sees; 32x32 stays exact."""
    if img.size == (size, size):
        return img.copy()
    return ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image to a (3, H, W) float tensor in [0, 1]."""
    x = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)
    return x.permute(2, 0, 1).contiguous()


def load_image(source: str | Path | bytes | Image.Image, size: int = 32) -> torch.Tensor:
    """What the model sees: (3, size, size) float in [0, 1]. Raises ImageError on bad input."""
    return pil_to_tensor(fit_square(read_image(source)[0], size))
