"""Hostile input: nothing a client sends gets a 5xx, every refusal says why, and nothing it sends grows the
gateway's memory or reaches outside the storage root.

- a fuzzer (schemathesis) generates requests for every POST route of the gateway's own OpenAPI spec;
- by hand: bodies that are not UTF-8, not JSON, too deep, too big, of the wrong content type, or broken
  forms; images that are decompression bombs, truncated or of other formats; prompts built to bend a
  storage key; traversal on `/files/`; spoofed `X-Forwarded-For`; thousands of made-up API keys.

`tests/test_gateway.py` already covers plain invalid fields, a text file, a 60-byte PNG, an 11 MB upload, a
200 KB JSON body and three traversals: these are the cases it does not.
"""

from __future__ import annotations

import contextlib
import io
import re
import secrets
import socket
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from PIL import Image

from testbed.composition import AUTH, LocalFilesServer, new_seed
from testbed.figures import FIGURES
from tests.test_uploads import scan_bomb

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
IMAGE_KEY = re.compile(r"images/[0-9a-f]{64}\.png")
AUDIO_KEY = re.compile(r"audio/[0-9a-f]{64}\.wav")
ANY_KEY = re.compile(r"(images/[0-9a-f]{64}\.(png|webp|jpeg)|audio/[0-9a-f]{64}\.(wav|flac|ogg))")

# The POST routes of the gateway's spec; the fuzz test below checks that this is all of them.
POST_ROUTES = (
    "/generate_image",
    "/synthesize_speech",
    "/caption_image",
)
EXAMPLES_PER_MODE = 13  # positive and negative: about 25 requests per route


def says_why(response) -> bool:
    """A 4xx body is one JSON object with a non-empty `error` message."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), str) and bool(body["error"].strip())


def refused_with_reason(response) -> bool:
    return 400 <= response.status_code < 500 and says_why(response)


# The fuzzer.


@pytest.fixture(scope="module")
def served_spec(composition):
    return httpx.get(f"{composition.url}/docs.json", timeout=30).json()


def as_openapi_30(node):
    """The spec with JSON Schema 2019 exclusive bounds (`exclusiveMaximum: 4294967296`, from pydantic's
    `Lt`) in their OpenAPI 3.0 form (`maximum` + `exclusiveMaximum: true`): BentoML declares 3.0 but writes
    the seed's bound the newer way, and schemathesis rejects the seed's schema as it is served."""
    if isinstance(node, list):
        return [as_openapi_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    fixed = {key: as_openapi_30(value) for key, value in node.items()}
    for bound, exclusive in (("maximum", "exclusiveMaximum"), ("minimum", "exclusiveMinimum")):
        value = fixed.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            fixed[bound], fixed[exclusive] = value, True
    return fixed


@pytest.fixture(scope="module")
def api_schema(served_spec):
    import schemathesis

    return schemathesis.openapi.from_dict(as_openapi_30(served_spec)).include(method="POST")


def test_the_fuzzed_routes_are_every_post_route_of_the_spec(served_spec):
    posted = {path for path, methods in served_spec["paths"].items() if "post" in methods}
    assert posted == set(POST_ROUTES)


def affordable(body):
    """Shrink what a valid request may cost (a 1536² image at 100 steps takes minutes on a CPU) without
    making a valid value invalid or an invalid one valid: the fuzzer is after the gateway, not the GPU."""
    if not isinstance(body, dict):
        return
    for side in ("width", "height"):
        value = body.get(side)
        if type(value) is int and 64 <= value <= 1536 and value % 8 == 0:
            body[side] = min(value, 128)
    steps = body.get("steps")
    if type(steps) is int and 1 <= steps <= 100:
        body["steps"] = min(steps, 2)
    text = body.get("text")
    if isinstance(text, str) and 0 < len(text.strip()) <= 2000 and len(text) > 200:
        body["text"] = text.strip()[:200]


def settle_task(gateway, path: str, response) -> None:
    """Wait for a submitted job, so the jobs a fuzzer starts never pile up behind the model services."""
    if not path.endswith("/submit") or response.status_code != 200:
        return
    status_route = path.removesuffix("/submit") + "/status"
    task_id = response.json()["task_id"]
    for _ in range(240):
        status = httpx.get(f"{gateway.url}{status_route}", params={"task_id": task_id}, headers=AUTH, timeout=30)
        if status.status_code != 200 or status.json()["status"] not in ("in_progress", "pending"):
            return
        time.sleep(0.25)


@pytest.mark.parametrize("path", POST_ROUTES)
def test_fuzzed_requests_never_get_a_5xx_and_every_4xx_says_why(gateway, api_schema, path):
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    operation = api_schema[path]["POST"]
    bad = []

    def fuzz(mode: GenerationMode) -> None:
        @settings(
            max_examples=EXAMPLES_PER_MODE,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def send(case):
            affordable(case.body)
            response = FIGURES.record(case.call(base_url=gateway.url, headers=AUTH, timeout=120))
            settle_task(gateway, path, response)
            if response.status_code >= 500 or (response.status_code >= 400 and not says_why(response)):
                bad.append(
                    f"{mode.value}: {response.status_code} {response.content[:200]!r} for {case.as_curl_command()}"
                )

        # Unsatisfiable: nothing to make invalid in the route's schema (retry takes only a query parameter).
        with contextlib.suppress(Unsatisfiable):
            send()

    fuzz(GenerationMode.POSITIVE)
    fuzz(GenerationMode.NEGATIVE)
    assert not bad, "\n".join(bad[:5])


# Bodies.


def deep(depth: int) -> bytes:
    return b'{"prompt": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("route", "body", "content_type"),
    [
        ("/generate_image", b'{"prompt": "\xff\xfe\xfd"}', JSON),
        ("/generate_image", b'{"prompt": "caf\xe9"}', JSON),
        ("/synthesize_speech", b'{"text": "\\ud800"}', JSON),
        ("/generate_image", b'{"prompt": ', JSON),
        ("/generate_image", b"[]", JSON),
        ("/generate_image", b"null", JSON),
        ("/generate_image", b'"a prompt"', JSON),
        ("/generate_image", deep(30_000), JSON),
        ("/generate_image", b'{"prompt": "x", "width": 64, "height": 64, "guidance_scale": NaN}', JSON),
        ("/generate_image", b'{"prompt": "x", "width": 1e400}', JSON),
        ("/generate_image", b'{"prompt": "x", "seed": 99999999999999999999999999999999}', JSON),
        ("/generate_image", b'\xef\xbb\xbf{"prompt": "x"}', JSON),
        ("/generate_image", b"<prompt>x</prompt>", "application/xml"),
        ("/generate_image", b"prompt=&width=64", FORM),
        ("/generate_image", b"\x80\x04\x95\x00", "application/vnd.bentoml+pickle"),
        ("/caption_image", b'{"image": "/etc/passwd"}', JSON),
    ],
    ids=[
        "invalid utf-8",
        "latin-1",
        "lone surrogate",
        "truncated json",
        "array",
        "null",
        "string",
        "30000 levels deep",
        "NaN",
        "1e400",
        "huge integer",
        "byte order mark",
        "xml",
        "empty form field",
        "pickle",
        "json where an upload belongs",
    ],
)
def test_malformed_bodies_get_a_4xx_that_says_why(gateway, route, body, content_type):
    response = FIGURES.record(gateway.post(route, content=body, headers={"Content-Type": content_type}))
    assert refused_with_reason(response), (response.status_code, response.text)


def many_fields_multipart(n: int) -> bytes:
    parts = b"".join(b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(n))
    return parts + b"--b--\r\n"


@pytest.mark.parametrize(
    ("route", "body", "content_type"),
    [
        ("/caption_image", b"--x\r\n", "multipart/form-data"),
        ("/caption_image", b"this is not multipart", "multipart/form-data; boundary=zzz"),
        ("/caption_image", many_fields_multipart(1100), "multipart/form-data; boundary=b"),
    ],
    ids=["no boundary", "unframed body", "1100 parts"],
)
def test_malformed_forms_get_400_not_500(gateway, route, body, content_type):
    # Starlette refuses these with HTTPException(400), which BentoML's endpoint wrapper turns into a 500.
    response = FIGURES.record(gateway.post(route, content=body, headers={"Content-Type": content_type}))
    assert response.status_code == 400 and says_why(response), (response.status_code, response.text)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"this is not multipart", "multipart/form-data; boundary=zzz"),
        ("&".join(f"f{i}=v" for i in range(1100)).encode(), FORM),
    ],
    ids=["unframed multipart", "1100 form fields"],
)
def test_forms_sent_to_a_json_route_get_415_not_500(gateway, body, content_type):
    response = FIGURES.record(gateway.post("/generate_image", content=body, headers={"Content-Type": content_type}))
    assert response.status_code == 415 and says_why(response), (response.status_code, response.text)
    assert "application/json" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"image=http%3A%2F%2F203.0.113.10%2Fhuge.png", FORM),
        (b"image=%2Fetc%2Fpasswd", FORM),
        (
            b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\nhttp://203.0.113.10/x.png\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
        ),
    ],
    ids=["url in a form field", "path in a form field", "url in a text part"],
)
def test_text_where_the_image_file_belongs_is_refused_not_fetched(gateway, body, content_type):
    # BentoML's multipart serde treats a text value of a file parameter as a URL and downloads it in the
    # gateway (`MultipartSerde.ensure_file`, guarded by a uvloop patch); without uvloop it answers 500.
    response = FIGURES.record(gateway.post("/caption_image", content=body, headers={"Content-Type": content_type}))
    assert response.status_code == 400 and says_why(response), (response.status_code, response.text)
    assert response.json()["error"].startswith("image")


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("route", "size"), [("/generate_image", 1_000_000), ("/caption_image", 12_000_000)])
def test_oversized_bodies_get_413_with_or_without_a_declared_length(gateway, route, size, declared):
    body = b'{"prompt": "' + b"x" * size + b'"}'
    if declared:
        response = gateway.post(route, content=body, headers={"Content-Type": JSON})
    else:
        chunks = (body[offset : offset + 65536] for offset in range(0, len(body), 65536))
        response = gateway.post(route, content=chunks, headers={"Content-Type": JSON})
    FIGURES.record(response)
    assert response.status_code == 413 and says_why(response), (response.status_code, response.text[:200])


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/octet-stream", "application/json; charset=latin-1"]
)
def test_json_under_another_content_type_is_handled_not_crashed(gateway, content_type):
    body = b'{"prompt": "content types", "width": 64, "height": 64, "seed": 5}'
    headers = {"Content-Type": content_type} if content_type else {}
    response = FIGURES.record(gateway.post("/generate_image", content=body, headers=headers))
    assert response.status_code == 200 or refused_with_reason(response), (response.status_code, response.text)


# Uploads.


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid grayscale PNG of zeros: a few kilobytes per megapixel that decode to one byte a pixel."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width`×`height` RGB pixels, with almost no data behind it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def encoded(format: str, size=(256, 192), **options) -> bytes:
    image = Image.new("RGB", size)
    image.putdata([(x % 256, y % 256, (x * y) % 256) for y in range(size[1]) for x in range(size[0])])
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims `width`×`height`."""
    data = bytearray(encoded("JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    """A WebP with an extended header (VP8X) whose canvas is `width`×`height`."""
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + canvas
    inner = b"WEBP" + vp8x + encoded("WEBP")[12:]
    return b"RIFF" + struct.pack("<I", len(inner)) + inner


@pytest.mark.parametrize(
    ("upload", "status"),
    [
        (png_bomb(9000, 5000), 413),
        (png_claiming(100_000, 100_000), 413),
        (jpeg_claiming(60_000, 60_000), 413),
        (jpeg_claiming(9_000, 5_000), 413),
        (webp_claiming(16_000, 16_000), 413),
        (scan_bomb(), 400),
        (encoded("GIF"), 400),
        (encoded("BMP"), 400),
        (encoded("TIFF"), 400),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="99999" height="99999"/>', 400),
        (b"", 400),
    ],
    ids=[
        "png zlib bomb 45 MP",
        "png header 10 GP",
        "jpeg header 3.6 GP",
        "jpeg header 45 MP",
        "webp canvas 256 MP",
        "jpeg of 1000 scans",
        "gif",
        "bmp",
        "tiff",
        "svg",
        "empty file",
    ],
)
def test_hostile_uploads_are_refused_before_the_captioner(gateway, upload, status):
    gateway_process = gateway.process("Gateway")
    rss_before = gateway_process.memory_info().rss
    forwarded = gateway.metric("genmedia_gateway_forwarded_total", service="ImageCaptioning")
    response = FIGURES.record(gateway.post("/caption_image", files={"image": ("upload.png", upload, "image/png")}))
    assert response.status_code == status and says_why(response), (response.status_code, response.text)
    assert gateway.metric("genmedia_gateway_forwarded_total", service="ImageCaptioning") == forwarded
    assert (gateway_process.memory_info().rss - rss_before) / 2**20 < 50


@pytest.mark.parametrize("format", ["PNG", "JPEG", "WEBP"])
def test_truncated_uploads_are_refused_by_the_captioner_with_a_400_passed_on(gateway, format):
    # Only a decode tells a truncated file, and the captioner does the one full decode
    # (`genmedia.contract.uploads` says why); the gateway passes its 400 on.
    data = encoded(format)
    response = FIGURES.record(gateway.post("/caption_image", files={"image": ("cut", data[: len(data) // 2])}))
    assert response.status_code == 400 and "truncated or corrupt" in response.json()["error"], response.text


def cpu_s(*processes: psutil.Process) -> float:
    return sum(sum(process.cpu_times()[:2]) for process in processes)


def test_scan_bombs_cost_under_a_second_of_cpu_while_files_and_captions_answer(gateway):
    bomb = {"image": ("bomb.jpg", scan_bomb(side=2048), "image/jpeg")}
    services = gateway.process("Gateway"), gateway.process("ImageCaptioning")
    # Ten in a row, one at a time: one refusal is below the 10 ms tick the processes' CPU time is counted in.
    before = cpu_s(*services)
    alone = [FIGURES.record(gateway.post("/caption_image", files=bomb)) for _ in range(10)]
    refusal_cpu_s = (cpu_s(*services) - before) / len(alone)
    FIGURES.measure("scan-bomb JPEG: CPU to refuse one (gateway + captioner)", refusal_cpu_s * 1000, "ms")
    assert all(response.status_code == 400 for response in alone), alone[0].text
    assert "progressive scans" in alone[0].json()["error"]
    assert refusal_cpu_s < 1.0

    def timed(call):
        started = time.monotonic()
        return call(), time.monotonic() - started

    with ThreadPoolExecutor(max_workers=8) as pool:
        bombs = [pool.submit(gateway.post, "/caption_image", files=bomb) for _ in range(6)]
        # The composition stores in Supabase, where `/files` answers 404 for every key: still an answer.
        files, files_s = timed(lambda: httpx.get(f"{gateway.url}/files/images/{'ab' * 32}.png", timeout=60))
        caption, caption_s = timed(gateway.caption)
        refused = [FIGURES.record(future.result()) for future in bombs]
    FIGURES.timing("six scan bombs at once: a /files GET meanwhile", files_s)
    FIGURES.timing("six scan bombs at once: a small caption meanwhile", caption_s)
    assert [response.status_code for response in refused] == [400] * 6
    assert files.status_code == 404 and says_why(files)
    assert FIGURES.record(caption).status_code == 200 and caption.json()["caption"], caption.text


def cmyk_photo(width: int = 8000, height: int = 5000) -> bytes:
    """A 40-megapixel CMYK JPEG of a smooth gradient: under 2 MB of file, 160 MB of pixels decoded whole."""
    channel = Image.linear_gradient("L").resize((width, height))
    buffer = io.BytesIO()
    Image.merge("CMYK", [channel] * 4).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def test_ten_concurrent_40_megapixel_uploads_stay_under_a_gigabyte_per_service(gateway):
    photo = cmyk_photo()
    assert len(photo) < 10 * 2**20
    services = ("Gateway", "ImageCaptioning")
    idle = {name: gateway.rss_mb(name) for name in services}
    peak = dict(idle)
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = [
            pool.submit(gateway.post, "/caption_image", files={"image": (f"{n}.jpg", photo, "image/jpeg")})
            for n in range(10)
        ]
        while not all(answer.done() for answer in answers):
            for name in services:
                peak[name] = max(peak[name], gateway.rss_mb(name))
            time.sleep(0.05)
    # Sent to overflow: on two shared cores the last decodes may outlast the gateway's BACKEND_TIMEOUT_S,
    # and a 503 + Retry-After is then the contract working.
    responses = [FIGURES.record(answer.result(), overload=True) for answer in answers]
    growth = {name: peak[name] - idle[name] for name in services}
    FIGURES.memory({f"{name} above idle, ten 40 MP uploads at once": growth[name] for name in services})
    FIGURES.measure("ten 40 MP uploads at once: captioned", sum(r.status_code == 200 for r in responses), "of 10")
    assert all(
        response.status_code == 200 or (response.status_code == 503 and "retry-after" in response.headers)
        for response in responses
    ), [response.text for response in responses]
    assert any(response.status_code == 200 for response in responses)
    assert all(megabytes < 1024 for megabytes in growth.values()), growth


# Storage keys.


@pytest.mark.parametrize(
    "prompt",
    [
        "line one\r\nX-Injected: yes",
        "../../../../etc/passwd",
        "images/../../outside",
        "nul\x00byte",
        "%2e%2e%2f%00%0d%0a",
        "\u202eevil\ufeff\u2028",
    ],
    ids=["crlf header", "dot-dot", "key-shaped", "nul", "url-encoded", "unicode controls"],
)
def test_hostile_prompts_change_only_the_hash_in_the_key(gateway, storage, prompt):
    response = FIGURES.record(gateway.image(prompt=prompt))
    assert response.status_code == 200, response.text
    key = response.json()["file_key"]
    assert IMAGE_KEY.fullmatch(key)
    assert response.json()["public_url"].endswith("/" + key)
    assert gateway.stored(key)
    assert "x-injected" not in response.headers
    speech = FIGURES.record(gateway.speech(text=f"Say {prompt}."))
    assert speech.status_code == 200, speech.text
    assert AUDIO_KEY.fullmatch(speech.json()["file_key"])
    bucket_keys = [object_key for bucket, object_key in storage.objects if bucket == "reliability"]
    assert all(ANY_KEY.fullmatch(object_key) for object_key in bucket_keys), bucket_keys


# /files/ over local storage: the gateway's own app, served alone by uvicorn.


@pytest.fixture(scope="module")
def files_server(tmp_path_factory):
    work = tmp_path_factory.mktemp("files-server")
    (work / "secret.txt").write_text("TOP-SECRET-OUTSIDE-THE-ROOT")
    server = LocalFilesServer(work, RATE_LIMIT_PER_MINUTE="5", BLOCKED_IPS="203.0.113.0/24").start()
    from genmedia.outputs.storage import LocalObjectStore

    store = LocalObjectStore(server.root, server.url)
    server.key = f"images/{'ab' * 32}.png"
    store.put(server.key, encoded("PNG", size=(8, 8)), "image/png")
    yield server
    server.stop()


def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """GET `target` byte for byte: HTTP clients normalise `..` and percent-escapes away."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("latin-1"))
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


TRAVERSALS = [
    "/files/../secret.txt",
    "/files/../../secret.txt",
    "/files/..%2fsecret.txt",
    "/files/%2e%2e/secret.txt",
    "/files/%2e%2e%2fsecret.txt",
    "/files/images/..%2f..%2fsecret.txt",
    "/files/images/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/files/%252e%252e%252fsecret.txt",
    "/files/..%5csecret.txt",
    "/files/..\\secret.txt",
    "/files/%2fetc%2fpasswd",
    "/files//etc/passwd",
    "/files/images/x.png%00.txt",
    "/files/.meta/images/" + "ab" * 32 + ".png.json",
    "/files/./images/" + "ab" * 32 + ".png",
    "/files/images/%2e",
    "/files/" + "a/" * 300 + "x",
    "/files/%c0%ae%c0%ae/secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_files_route_refuses_traversal(files_server, target):
    status, body = raw_get(files_server.url, target)
    FIGURES.requests += 1
    assert status in (400, 404), (status, body[:200])
    assert b"TOP-SECRET" not in body and b"root:" not in body and b"content_type" not in body


def test_files_route_serves_a_stored_object(files_server):
    response = httpx.get(f"{files_server.url}/files/{files_server.key}", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"


def test_spoofed_forwarded_for_does_not_buy_a_fresh_rate_limit(files_server):
    # Loopback is not a trusted proxy here, so X-Forwarded-For is ignored: five a minute for the peer.
    statuses = [
        httpx.post(
            f"{files_server.url}/generate_image", headers={"X-Forwarded-For": f"198.51.100.{n}"}, timeout=30
        ).status_code
        for n in range(7)
    ]
    FIGURES.requests += len(statuses)
    assert statuses == [200] * 5 + [429] * 2
    blocked_looking = httpx.post(
        f"{files_server.url}/files/x", headers={"X-Forwarded-For": "203.0.113.7"}, timeout=30
    ).status_code
    assert blocked_looking != 403


# Resources: made-up keys and endless URLs.


def test_thousands_of_made_up_api_keys_leave_memory_and_metrics_as_they_were(gateway):
    process = gateway.process("Gateway")
    # One refusal first, so that BentoML's per-route series for a 401 exist before the measure.
    httpx.post(f"{gateway.url}/generate_image", headers={"Authorization": "Bearer made-up"}, json={"prompt": "x"})
    metrics_size = len(httpx.get(f"{gateway.url}/metrics", timeout=60).text)
    rss_before = process.memory_info().rss

    def try_keys(count: int) -> list[int]:
        with httpx.Client(timeout=30) as client:
            return [
                client.post(
                    f"{gateway.url}/generate_image",
                    headers={"Authorization": f"Bearer {secrets.token_urlsafe(24)}"},
                    json={"prompt": "x"},
                ).status_code
                for _ in range(count)
            ]

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = [status for batch in pool.map(try_keys, [500] * 4) for status in batch]
    FIGURES.requests += len(statuses)

    growth_mb = (process.memory_info().rss - rss_before) / 2**20
    FIGURES.memory({"Gateway growth after 2000 made-up keys": growth_mb})
    assert statuses == [401] * 2000
    assert growth_mb < 30
    assert len(httpx.get(f"{gateway.url}/metrics", timeout=60).text) - metrics_size < 2_000


def test_requests_for_files_cost_the_gateway_little_cpu(gateway):
    # `/files/` is public: no key, no rate limit. Opening a store per request (for Supabase, a new HTTP/2
    # client and storage client: ~50 ms of CPU) would hand anyone a cheap way to burn the gateway's CPU.
    process = gateway.process("Gateway")
    path = f"/files/images/{'cd' * 32}.png"
    with httpx.Client(timeout=30) as client:
        client.get(gateway.url + path)
        before = process.cpu_times()
        statuses = [client.get(gateway.url + path).status_code for _ in range(20)]
        after = process.cpu_times()
    FIGURES.requests += 21
    cpu_ms = ((after.user + after.system) - (before.user + before.system)) * 1000 / 20
    FIGURES.measure("/files/ CPU per request", cpu_ms, "ms")
    assert statuses == [404] * 20
    assert cpu_ms < 25


@pytest.mark.xfail(
    strict=True,
    reason="BentoML 1.4.39 labels its HTTP metrics with the raw request path (RunnerTrafficMetricsMiddleware): "
    "every distinct URL, even a 404, adds series to /metrics for good (see README 'Failure behaviour')",
)
def test_distinct_urls_do_not_grow_the_metrics(gateway):
    before = len(httpx.get(f"{gateway.url}/metrics", timeout=60).text)
    with httpx.Client(timeout=30) as client:
        for _ in range(40):
            client.get(f"{gateway.url}/no-such-page/{secrets.token_hex(8)}")
    FIGURES.requests += 40
    growth = len(httpx.get(f"{gateway.url}/metrics", timeout=60).text) - before
    FIGURES.measure("/metrics growth per distinct URL", growth / 40, "bytes")
    assert growth < 40 * 100


def test_a_real_seeded_request_still_works_after_all_that(gateway):
    response = FIGURES.record(gateway.image(seed=new_seed()))
    assert response.status_code == 200, response.text
    assert psutil.pid_exists(gateway.process("Gateway").pid)
