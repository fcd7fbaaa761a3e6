"""`read_upload_image` and `check_upload`: what an upload must be, what it becomes, what its decode may cost."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from genmedia.contract.errors import InvalidInput, PayloadTooLarge, Unavailable
from genmedia.contract.requests import MAX_UPLOAD_BYTES
from genmedia.contract.uploads import DecodeSlots, check_upload, read_upload_image


def gradient(width: int = 64, height: int = 48, mode: str = "RGB") -> Image.Image:
    """A small image whose pixels differ, so a rotation or a channel mix-up shows."""
    image = Image.new("RGB", (width, height))
    image.putdata([(x * 4 % 256, y * 5 % 256, (x + y) % 256) for y in range(height) for x in range(width)])
    return image.convert(mode)


def encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width`×`height` RGB pixels in its header but holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("format", "mode"),
    [("PNG", "RGBA"), ("PNG", "P"), ("PNG", "L"), ("JPEG", "RGB"), ("JPEG", "CMYK"), ("WEBP", "RGBA")],
)
def test_png_jpeg_and_webp_are_read_as_rgb(tmp_path, format, mode):
    path = write(tmp_path, f"upload.{format.lower()}", encoded(gradient(mode=mode), format))
    image = read_upload_image(path)
    assert image.mode == "RGB"
    assert image.size == (64, 48)


def test_pixels_survive_a_lossless_upload(tmp_path):
    original = gradient()
    image = read_upload_image(write(tmp_path, "upload.png", encoded(original, "PNG")))
    assert image.tobytes() == original.tobytes()


def test_a_text_file_is_refused_as_invalid(tmp_path):
    path = write(tmp_path, "notes.png", b"this is not an image, whatever its name says\n" * 20)
    with pytest.raises(InvalidInput, match=r"image: .*not a PNG, JPEG or WebP image") as refused:
        read_upload_image(path)
    assert refused.value.status == 400


def test_other_image_formats_are_refused_as_invalid(tmp_path):
    path = write(tmp_path, "upload.gif", encoded(gradient(mode="P"), "GIF"))
    with pytest.raises(InvalidInput, match="not a PNG, JPEG or WebP image"):
        read_upload_image(path)


@pytest.mark.parametrize("format", ["PNG", "JPEG", "WEBP"])
def test_a_truncated_image_is_refused_as_invalid(tmp_path, format):
    data = encoded(gradient(256, 256), format)
    path = write(tmp_path, f"cut.{format.lower()}", data[: len(data) // 2])
    with pytest.raises(InvalidInput, match="image: .*truncated or corrupt") as refused:
        read_upload_image(path)
    assert refused.value.status == 400


def test_truncated_images_stay_refused_when_a_library_allows_them(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = encoded(gradient(256, 256), "PNG")
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        read_upload_image(write(tmp_path, "cut.png", data[: len(data) // 2]))


def test_a_file_over_10_mb_is_refused_as_too_large(tmp_path):
    path = write(tmp_path, "big.png", b"\0" * (11 * 1024 * 1024))
    with pytest.raises(PayloadTooLarge, match=r"image: the file is 11\.0 MB, over the 10 MB limit") as refused:
        read_upload_image(path)
    assert refused.value.status == 413


def test_the_size_is_checked_before_the_file_is_read(tmp_path, monkeypatch):
    path = write(tmp_path, "big.png", b"\0" * (MAX_UPLOAD_BYTES + 1))

    def no_open(*args, **kwargs):
        raise AssertionError("the file was opened")

    monkeypatch.setattr(Image, "open", no_open)
    with pytest.raises(PayloadTooLarge):
        read_upload_image(path)


# Pillow warns about the 48-megapixel canvas as it opens it; the refusal is what this test checks.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        # Over the limit, under Pillow's error threshold (twice the limit): our header check answers.
        (8000, 6000, r"image: 8000×6000 pixels is over the 40-megapixel limit"),
        # Far over it: Pillow's bomb guard refuses it inside `Image.open`.
        (20000, 20000, r"image: the image is over 80 megapixels, and the limit is 40 megapixels"),
    ],
)
def test_a_huge_canvas_in_a_small_file_is_refused_before_decoding(tmp_path, monkeypatch, width, height, message):
    path = write(tmp_path, "bomb.png", png_header(width, height))
    assert path.stat().st_size < 1000

    def no_decode(self):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(PayloadTooLarge, match=message) as refused:
        read_upload_image(path)
    assert refused.value.status == 413


def test_exif_orientation_is_applied(tmp_path):
    # Orientation 6: the camera was turned a quarter clockwise; viewers rotate the stored pixels to show it.
    stored = gradient(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = write(tmp_path, "portrait.jpg", encoded(stored, "JPEG", exif=exif.tobytes(), quality=95))
    image = read_upload_image(path)
    assert image.size == (48, 64)
    upright = stored.transpose(Image.Transpose.ROTATE_270)
    # JPEG is lossy: compare a corner against the expected rotation and against the unrotated one.
    corner = image.crop((0, 0, 8, 8)).tobytes()
    assert distance(corner, upright.crop((0, 0, 8, 8)).tobytes()) < distance(
        corner, stored.crop((0, 0, 8, 8)).tobytes()
    )


def distance(a: bytes, b: bytes) -> int:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True))


# Bounded decoding: scans, draft size, decode slots.


def scan_bomb(side: int = 1024, repeats: int = 1000) -> bytes:
    """A progressive JPEG whose last scan is repeated `repeats` times: each repeat is a few bytes that cost
    the decoder a pass over every block of the canvas."""
    smooth = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    data = encoded(smooth, "JPEG", progressive=True, quality=75)
    last_scan = data.rindex(b"\xff\xda")
    return data[:-2] + data[last_scan:-2] * repeats + data[-2:]


def test_a_jpeg_with_too_many_scans_is_refused_from_its_markers(tmp_path, monkeypatch):
    path = write(tmp_path, "bomb.jpg", scan_bomb())

    def no_decode(self):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(InvalidInput, match=r"image: the JPEG has over 32 progressive scans") as refused:
        read_upload_image(path)
    assert refused.value.status == 400
    with pytest.raises(InvalidInput, match="progressive scans"):
        check_upload(path)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_progressive_jpegs_as_encoders_write_them_are_read(tmp_path, mode):
    # libjpeg's progressive scripts: 10 scans for colour, 6 for grey, 18 for CMYK.
    data = encoded(gradient(mode=mode), "JPEG", progressive=True)
    assert data.count(b"\xff\xda") <= 18
    image = read_upload_image(write(tmp_path, "progressive.jpg", data))
    assert (image.mode, image.size) == ("RGB", (64, 48))


def test_a_jpeg_is_decoded_at_about_the_size_asked(tmp_path):
    path = write(tmp_path, "photo.jpg", encoded(gradient(4000, 3000), "JPEG"))
    # 3000 / 384 ≥ 4 but < 8: a quarter-scale decode, straight from the DCT coefficients.
    assert read_upload_image(path, draft_size=(384, 384)).size == (1000, 750)
    assert read_upload_image(path).size == (4000, 3000)


def test_a_drafted_jpeg_is_still_turned_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = write(tmp_path, "portrait.jpg", encoded(gradient(1600, 1200), "JPEG", exif=exif.tobytes()))
    image = read_upload_image(path, draft_size=(384, 384))
    assert (image.mode, image.size) == ("RGB", (600, 800))


def test_the_draft_size_leaves_other_formats_whole(tmp_path):
    original = gradient()
    image = read_upload_image(write(tmp_path, "upload.png", encoded(original, "PNG")), draft_size=(16, 16))
    assert image.tobytes() == original.tobytes()


def test_check_upload_refuses_what_read_upload_image_refuses_from_headers(tmp_path):
    with pytest.raises(PayloadTooLarge, match="over the 40-megapixel limit"):
        check_upload(write(tmp_path, "bomb.png", png_header(8000, 6000)))
    with pytest.raises(InvalidInput, match="not a PNG, JPEG or WebP image"):
        check_upload(write(tmp_path, "notes.png", b"plain text, not an image\n" * 20))
    assert check_upload(write(tmp_path, "ok.jpg", encoded(gradient(), "JPEG"))) is None


def test_decodes_beyond_the_slots_and_their_queue_are_refused_with_retry_after():
    slots = DecodeSlots(workers=1, waiting=1)
    release = threading.Event()

    async def flood():
        running = [asyncio.create_task(slots.run(release.wait, 30)) for _ in range(2)]
        await asyncio.sleep(0)  # both admitted: one decoding, one waiting
        with pytest.raises(Unavailable) as refused:
            await slots.run(release.wait, 30)
        release.set()
        return refused.value, await asyncio.gather(*running)

    refused, finished = asyncio.run(flood())
    assert (refused.status, refused.retry_after) == (503, 5)
    assert finished == [True, True]
    assert slots.admitted == 0
