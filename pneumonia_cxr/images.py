"""Decoding images (files and uploads) into arrays, the limits on what is accepted, and the one
preprocessing every model input goes through."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .common import IMAGE_SIZE, ImageDecodeError

# ----------------------------------------------------------------------------------------------
# Upload limits (the app and its README state these; nowhere else sets them)
# ----------------------------------------------------------------------------------------------
MAX_IMAGE_PIXELS = 16_000_000  # refuse larger images (memory, decompression bombs); originals are < 9 MP
# Upload formats: those Pillow decodes to an image of the size its header states. Container formats
# (ICO, ICNS, ...) state one size and may decode a bigger embedded image, past the pixel cap.
UPLOAD_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP")
# Largest long side / short side accepted: chest X-rays are about 1 to 2. Antialiased resizing to
# 224 x 224 allocates about 224 x the long side x 3 floats, 43 GB for a 1 x 16,000,000 image.
MAX_ASPECT_RATIO = 8
DEFAULT_MAX_UPLOAD_MB = 20  # request body limit of the app ($MAX_UPLOAD_MB); the largest original is about 3 MB


# ----------------------------------------------------------------------------------------------
# Decoding and preprocessing
# ----------------------------------------------------------------------------------------------
def decode_image_bytes(data: bytes, source: str = "image") -> np.ndarray:
    """Decode image bytes of any common mode into a uint8 RGB array (H, W, 3).

    PNG, JPEG, TIFF, BMP, GIF and WebP (``UPLOAD_FORMATS``) are accepted, judged from the content,
    not a name; grayscale, RGB, RGBA (alpha dropped onto black), palette, CMYK and 16-bit or 32-bit
    images (the latter scaled by their actual range, min to max); EXIF orientation is applied.

    Raises:
        ImageDecodeError: empty, truncated, corrupt, non-image, other-format, oversized
        (> MAX_IMAGE_PIXELS) or elongated (> MAX_ASPECT_RATIO) input; the message names ``source``
        and the problem. Size and shape are checked from the header, before the pixels are decoded,
        and again after.
    """
    if not data:
        raise ImageDecodeError(f"{source}: the file is empty")
    return _to_rgb_uint8(_open_image(data, source))


def _open_image(data: bytes, source: str) -> Image.Image:
    """The decoded, EXIF-oriented PIL image of ``data``; ImageDecodeError for anything the bytes cause.

    Thread-safe: no warning filters are changed; Pillow's own decompression-bomb limit (about 179 MP)
    only matters for images far over ours, which are refused either way."""
    try:
        image = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
        _check_size(image.width, image.height, source)  # from the header: nothing decoded yet
        image.load()
        _check_size(image.width, image.height, source)  # in case a decoder found more pixels
        ImageOps.exif_transpose(image, in_place=True)
        return image
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{source}: not an image of an accepted format (content not recognised; "
                               f"accepted: {', '.join(UPLOAD_FORMATS)})") from None
    except Image.DecompressionBombError:  # Pillow's check, in open() before ours for > ~179 MP
        raise ImageDecodeError(f"{source}: image too large (a decompression bomb); {_pixel_limit()}") from None
    except MemoryError:  # the server's shortage, not the input's fault
        raise
    except Exception as error:  # all else Pillow raises on malformed bytes: OSError, struct.error, EOFError, ...
        raise ImageDecodeError(f"{source}: corrupt, truncated or unsupported image "
                               f"({type(error).__name__}: {error})") from None


def _pixel_limit() -> str:
    """The pixel cap, as error messages state it."""
    return (f"at most {MAX_IMAGE_PIXELS / 1e6:g} megapixels ({MAX_IMAGE_PIXELS:,} pixels) are accepted, "
            f"chest X-rays need far fewer")


def _check_size(width: int, height: int, source: str) -> None:
    """ImageDecodeError naming the size and the limit when width x height > MAX_IMAGE_PIXELS or the
    long side is more than MAX_ASPECT_RATIO times the short side."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(f"{source}: image too large ({width}x{height} = "
                               f"{width * height / 1e6:.1f} megapixels; {_pixel_limit()})")
    long_side, short_side = max(width, height), min(width, height)
    if long_side > MAX_ASPECT_RATIO * short_side:
        raise ImageDecodeError(
            f"{source}: image too elongated ({width}x{height}: long side / short side = "
            f"{long_side / max(short_side, 1):,.1f}; at most {MAX_ASPECT_RATIO} is accepted, "
            f"chest X-rays are about 1 to 2)")


def _to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """PIL image of any mode -> uint8 RGB array (H, W, 3); 16-bit, 32-bit and float images are
    scaled by their actual range (min -> 0, max -> 255; a constant image -> 0)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        low, high = image.getextrema()
        grey = np.asarray(image, dtype=np.float32)
        grey -= low
        grey *= 255.0 / (high - low) if high > low else 0.0
        grey += 0.5
        return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def preprocess_pixels(images):
    """uint8 RGB image(s) (H, W, 3) or (N, H, W, 3) -> float32 (…, 224, 224, 3) in [0, 1].

    The one resize used in training, evaluation and the app: squashed to 224 x 224 (aspect ratio
    not kept, as Keras' ``target_size`` did), bilinear with antialiasing, then divided by 255.
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    # from uint8 directly: the same values as from float32, without a full-size float32 copy
    resized = tf.image.resize(images, IMAGE_SIZE, method="bilinear", antialias=True)
    return tf.clip_by_value(resized / 255.0, 0.0, 1.0)


def load_image_for_model(data: bytes, source: str = "image",
                         display_max_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bytes -> (original uint8 RGB (H, W, 3), model input float32 (1, 224, 224, 3) in [0, 1]).

    The model input is always made from the full-resolution decode. ``display_max_side`` shrinks
    the returned original (aspect ratio kept) to at most that many pixels on its long side, for
    showing and drawing on it at a bounded cost.
    """
    original = decode_image_bytes(data, source)
    model_input = np.asarray(preprocess_pixels(original[None]))
    if display_max_side is not None and max(original.shape[:2]) > display_max_side:
        original = shrink_image(original, display_max_side)
    return original, model_input


def shrink_image(image: np.ndarray, max_side: int) -> np.ndarray:
    """uint8 image (H, W, 3) shrunk, aspect ratio kept, to at most ``max_side`` pixels on its long
    side (Pillow's thumbnail: a cheap integer reduce, then an antialiased bilinear resample)."""
    thumbnail = Image.fromarray(image)
    thumbnail.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(thumbnail)
