"""Reading photos: from a path or bytes, only in the formats a photo comes in, upright, never too large.

Pillow can open several dozen formats, some through external programs (EPS runs Ghostscript): a photo is
opened with an explicit list of formats, whatever its name says. Any failure to decode becomes a
DataError naming the file, so that one bad photo never stops a batch.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import DataError, one_line, quote
from .preprocess import FaceFormat, preprocess_face

# What cameras, phones, browsers and screenshots write. (Pillow registers multi-picture JPEGs from phones
# under JPEG, and reads AVIF where it was built with libavif.)
PHOTO_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "AVIF")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".avif")
# A photo over this many pixels is refused before it is decoded (a 30000 x 30000 PNG bomb is 900 M).
MAX_IMAGE_PIXELS = 80_000_000


def open_image(source, name: str | None = None) -> Image.Image:
    """Open a photo from a path or bytes: upright (EXIF), in mode L or RGB (`to_viewable`); huge images are
    refused before they are decoded. DataError, naming the file, for anything that is not a usable photo."""
    shown = quote(name if name is not None else source if not isinstance(source, (bytes, bytearray)) else "upload")
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            if not len(source):
                raise DataError(f"cannot read {shown}: empty file")
            fp = io.BytesIO(bytes(source))
        else:
            path = Path(source)
            if not path.exists():
                raise DataError(f"cannot read {shown}: no such file")
            if path.is_dir():
                raise DataError(f"cannot read {shown}: is a folder, not an image")
            if path.stat().st_size == 0:
                raise DataError(f"cannot read {shown}: empty file")
            fp = path.open("rb")
        with fp, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse, do not warn
            try:
                image = Image.open(fp, formats=PHOTO_FORMATS)
            except Image.UnidentifiedImageError:
                raise DataError(f"cannot read {shown}: not an image in a photo format "
                                f"({', '.join(PHOTO_FORMATS)})") from None
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise DataError(f"cannot read {shown}: image too large "
                                f"({image.width} x {image.height} pixels, limit {MAX_IMAGE_PIXELS:,})")
            image.load()
            image = ImageOps.exif_transpose(image)
        try:
            return to_viewable(image)
        except ValueError as e:
            raise DataError(f"cannot read {shown}: {one_line(e)}") from None
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"cannot read {shown}: image too large ({one_line(e)})") from None
    except PermissionError:
        raise DataError(f"cannot read {shown}: permission denied") from None
    except Exception as e:  # decoders raise OSError, ValueError, SyntaxError, RuntimeError, struct.error...
        raise DataError(f"cannot read {shown}: corrupt image ({type(e).__name__}: {one_line(e)})") from None


def as_image(image) -> Image.Image:
    """A photo given as a path, bytes, a PIL image or a NumPy array (H x W gray, H x W x 3 RGB or x 4 RGBA;
    uint8, or floats in [0, 1]), as a PIL image in mode L or RGB. OpenCV reads BGR: pass `bgr[..., ::-1]`."""
    if isinstance(image, Image.Image):
        return to_viewable(image)
    if isinstance(image, np.ndarray):
        pixels = image
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[..., 0]
        if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)) or not pixels.size:
            raise DataError(f"an image array is H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA), not "
                            f"{' x '.join(map(str, image.shape))}")
        if pixels.dtype == np.bool_ or np.issubdtype(pixels.dtype, np.floating):
            if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
                raise DataError("an image array of floats holds values in [0, 1] (no NaN or infinity)")
            pixels = (pixels * 255).round()
        elif pixels.dtype != np.uint8 and (pixels.min() < 0 or pixels.max() > 255):
            raise DataError(f"an image array of {pixels.dtype} holds values from 0 to 255")
        return to_viewable(Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)))
    return open_image(image)


def to_viewable(image: Image.Image) -> Image.Image:
    """Any PIL mode as a viewer shows it, in mode L or RGB: 16-bit and float scaled to 0-255, transparent
    pixels over white, CMYK and palettes converted, CIELab by its lightness."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
        return Image.fromarray(scaled.round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    if image.mode == "LAB":
        return image.getchannel("L")
    if image.mode in ("L", "RGB"):
        return image
    if image.mode == "1":
        return image.convert("L")
    try:
        return image.convert("RGB")
    except ValueError as e:
        raise ValueError(f"unsupported image mode {image.mode} ({one_line(e)})") from None


def to_gray(image: Image.Image) -> np.ndarray:
    """Any PIL mode as one uint8 gray channel (H x W)."""
    return np.asarray(to_viewable(image).convert("L"), dtype=np.uint8)


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode as uint8 RGB (H x W x 3): what the face detector reads."""
    return np.asarray(to_viewable(image).convert("RGB"), dtype=np.uint8)


def to_channels(image: Image.Image, channels: int) -> np.ndarray:
    """Any PIL mode as what a network of 1 (gray, H x W) or 3 channels (RGB, H x W x 3) reads."""
    return to_gray(image) if channels == 1 else to_rgb(image)


def read_face(source, name: str | None = None, face: FaceFormat = FaceFormat()) -> np.ndarray:
    """A face crop file (a data set member) as the network's input: `face`'s size and colour, equalized."""
    return preprocess_face(to_channels(open_image(source, name), face.channels), face)


def display_name(path: str | os.PathLike) -> str:
    """A path as it may be printed on its own line (escaped only where it holds control characters)."""
    text = str(path)
    return text if text.isprintable() else repr(text)
