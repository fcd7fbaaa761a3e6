"""The one guarded decode of an uploaded image, shared by the gateway and the captioner.

An upload is untrusted: a small file can claim a huge canvas (a decompression bomb), repeat a progressive
JPEG scan a thousand times (each repeat costs a pass over every block, however few bytes it takes), stop
halfway, or be some other format Pillow happens to read. So each check runs before the work it protects:
the file size from `stat` before a byte is read, the format, the canvas size and the JPEG scan count from
the headers before a pixel is decoded, and the decode itself refuses truncated data instead of padding it
with grey. The decode is then as small as the format allows (`Image.draft`: a JPEG decodes at 1/2, 1/4 or
1/8 scale, straight from its DCT coefficients) and never copies the image more than once.

Where each part runs: the gateway checks only the headers (`check_upload`: microseconds, no pixels), and
the captioner alone decodes (`read_upload_image`). The gateway is the one public service, on a small CPU
instance whose cores must stay free for routing, `/files` and JSON; the captioner has cores reserved for
images and must decode anyway when it is served alone. Decoding in both would double the CPU and memory
of every upload. A file only its decode can tell is broken (truncated, corrupt) is refused by the
captioner with a 400 the gateway passes on.

Both run their share in `DECODES`: a few threads of their own rather than the event loop's default pool,
so a flood of uploads waits there, or is refused with 503 + Retry-After beyond a short queue, while every
other route keeps its threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import re
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from genmedia.contract.errors import InvalidInput, PayloadTooLarge, Unavailable
from genmedia.contract.requests import ACCEPTED_IMAGE_FORMATS, MAX_IMAGE_PIXELS, MAX_UPLOAD_BYTES

# Pillow's own bomb guard, set to our limit: it warns above it and raises above twice it, in `Image.open`.
# Process-wide, so images BentoML itself decodes in this process get the same guard.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

# What Pillow raises on damaged data: the decoders' `OSError`s ("image file is truncated"), the parsers'
# `SyntaxError`s ("not a PNG file"), and the rest from chunk, EXIF and header fields that do not add up.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error)

MEGABYTE = 1024 * 1024

# The most scans a progressive JPEG may have. libjpeg's own progressive scripts (what Pillow, ImageMagick
# and most cameras' software write) use 10 scans for colour, 6 for grey and 18 for CMYK; other encoders'
# searched scripts stay near those. 32 leaves them room, and bounds a decode to about three times what an
# ordinary progressive JPEG of that canvas costs.
MAX_JPEG_SCANS = 32
# The most marker segments walked in one JPEG: a real one has a few dozen (tables, APPn, one per scan).
MAX_JPEG_SEGMENTS = 1024
# After a scan's header, its entropy-coded data runs to the next marker: 0xFF then a code that is neither a
# stuffed zero, a fill byte nor a restart marker (those may appear inside the data).
NEXT_MARKER = re.compile(rb"\xff[^\x00\xff\xd0-\xd7]")
JPEG_SOS, JPEG_EOI = 0xDA, 0xD9

# Decodes run on their own threads, this many at once (Pillow's decoders release the GIL, so each uses a
# core), with this many more waiting; beyond that an upload is refused, to be retried.
DECODE_WORKERS = 2
DECODE_WAITING = 16
DECODE_RETRY_AFTER_S = 5

T = TypeVar("T")


def check_upload(path: Path) -> None:
    """Refuse the upload at `path` if its size, format, canvas or scan count is out of bounds (headers only).

    Raises `PayloadTooLarge` (413) for a file over 10 MB or a canvas over 40 megapixels, and
    `InvalidInput` (400) for anything that is not a PNG, JPEG or WebP image or has too many JPEG scans.
    """
    with opened_upload(path):
        pass


def read_upload_image(path: Path, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """The uploaded image at `path`, checked as `check_upload` does, decoded, upright (EXIF orientation
    applied) and in RGB. With `draft_size`, a JPEG is decoded at the smallest of 1/2, 1/4, 1/8 scale that
    keeps it at least that size, which costs up to 64 times less memory and time than the full canvas.

    Raises what `check_upload` raises, and `InvalidInput` (400) for a truncated or corrupt image.
    """
    with opened_upload(path) as image:
        try:
            if draft_size is not None:
                image.draft("RGB", draft_size)
            image.load()
            # Each step works on the (drafted) image itself or on one copy of it, never the file's canvas.
            upright = image if image.mode == "RGB" else image.convert("RGB")
            ImageOps.exif_transpose(upright, in_place=True)
        except DECODE_ERRORS as error:
            raise InvalidInput(f"image: the file is truncated or corrupt and cannot be decoded ({error}).") from None
        return upright


@contextlib.contextmanager
def opened_upload(path: Path) -> Iterator[ImageFile.ImageFile]:
    """The upload at `path` opened (headers read, no pixels) once every header check has passed."""
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
            if image.format == "JPEG":
                check_jpeg_scans(path)
            yield image
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


def check_jpeg_scans(path: Path) -> None:
    """Walk the JPEG's markers (skipping each scan's data with one regex search) and refuse it past
    MAX_JPEG_SCANS scans or MAX_JPEG_SEGMENTS segments. Damage is left for the decoder to report."""
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        position, scans, segments = 2, 0, 0  # past SOI
        while position + 4 <= len(data) and data[position] == 0xFF:
            marker = data[position + 1]
            if marker == 0xFF:  # a fill byte before a marker
                position += 1
                continue
            if marker == JPEG_EOI:
                return
            segments += 1
            if segments > MAX_JPEG_SEGMENTS:
                raise InvalidInput(f"image: the JPEG has over {MAX_JPEG_SEGMENTS} segments.")
            position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
            if marker == JPEG_SOS:
                scans += 1
                if scans > MAX_JPEG_SCANS:
                    raise InvalidInput(
                        f"image: the JPEG has over {MAX_JPEG_SCANS} progressive scans; "
                        "save it again with an ordinary encoder (libjpeg writes at most 18)."
                    )
                found = NEXT_MARKER.search(data, position)
                if found is None:
                    return
                position = found.start()


class DecodeSlots:
    """A few threads of their own for upload checks and decodes, with a short queue in front.

    A decode cannot be interrupted once it runs (a request timeout only abandons it), so the bound is on how
    many run and wait: `workers` at once, `waiting` more queued, and 503 + Retry-After beyond that.
    """

    def __init__(self, workers: int, waiting: int):
        self.capacity = workers + waiting
        self.admitted = 0
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="upload-decode")

    async def run(self, work: Callable[..., T], *args) -> T:
        if self.admitted >= self.capacity:
            raise Unavailable(
                f"Too many images are being decoded; retry in {DECODE_RETRY_AFTER_S} s.",
                retry_after=DECODE_RETRY_AFTER_S,
            )
        self.admitted += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, work, *args)
        finally:
            self.admitted -= 1


DECODES = DecodeSlots(DECODE_WORKERS, DECODE_WAITING)
