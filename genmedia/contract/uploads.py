"""The one guarded decode of an uploaded image, shared by the gateway and the captioner.

An upload is untrusted: a small file can claim a huge canvas (a decompression bomb), stop halfway, or be
some other format Pillow happens to read. So each check runs before the work it protects: the file size
from `stat` before a byte is read, the format and the canvas size from the header before the pixels are
decoded, and the decode itself refuses truncated data instead of padding it with grey.
"""

from __future__ import annotations

import struct
from pathlib import Path

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from genmedia.contract.errors import InvalidInput, PayloadTooLarge
from genmedia.contract.requests import ACCEPTED_IMAGE_FORMATS, MAX_IMAGE_PIXELS, MAX_UPLOAD_BYTES

# Pillow's own bomb guard, set to our limit: it warns above it and raises above twice it, in `Image.open`.
# Process-wide, so images BentoML itself decodes in this process get the same guard.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

# What Pillow raises on damaged data: the decoders' `OSError`s ("image file is truncated"), the parsers'
# `SyntaxError`s ("not a PNG file"), and the rest from chunk, EXIF and header fields that do not add up.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error)

MEGABYTE = 1024 * 1024


def read_upload_image(path: Path) -> Image.Image:
    """The uploaded image at `path`, upright (EXIF orientation applied) and in RGB.

    Raises `PayloadTooLarge` (413) for a file over 10 MB or a canvas over 40 megapixels, and
    `InvalidInput` (400) for anything that is not a whole PNG, JPEG or WebP image.
    """
    size = Path(path).stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(
            f"image: the file is {size / MEGABYTE:.1f} MB, over the {MAX_UPLOAD_BYTES // MEGABYTE} MB limit."
        )
    # Another library may have switched these globals; a truncated file must fail, never decode half grey.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        # Opening reads only the header; only the accepted formats' parsers are tried.
        with Image.open(path, formats=ACCEPTED_IMAGE_FORMATS) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise PayloadTooLarge(
                    f"image: {width}×{height} pixels is over the {MAX_IMAGE_PIXELS // 1_000_000}-megapixel limit."
                )
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Raised by `Image.open` itself above twice the limit, before we see the size.
        raise PayloadTooLarge(
            f"image: the image is over {2 * MAX_IMAGE_PIXELS // 1_000_000} megapixels, "
            f"and the limit is {MAX_IMAGE_PIXELS // 1_000_000} megapixels."
        ) from None
    except UnidentifiedImageError:
        raise InvalidInput("image: the file is not a PNG, JPEG or WebP image.") from None
    except DECODE_ERRORS as error:
        raise InvalidInput(f"image: the file is truncated or corrupt and cannot be decoded ({error}).") from None
