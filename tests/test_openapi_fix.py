"""`tools.openapi_spec.fix_spec`: each defect of BentoML 1.4.39's gateway spec, present before and gone after.

The spec is the real one (`Gateway.openapi_spec`, what `/docs.json` serves), read in-process.
"""

from __future__ import annotations

import json

import pytest

from tools.openapi_spec import fix_spec, gateway_spec

SERVER_TASK_STATUSES = ["pending", "in_progress", "completed", "failed", "canceled"]
ERROR_STATUSES = {"400", "401", "403", "404", "413", "429", "500", "503"}


@pytest.fixture(scope="module")
def raw_spec():
    return gateway_spec()


@pytest.fixture(scope="module")
def spec(raw_spec):
    return fix_spec(raw_spec)


def operation(spec, path, method="post"):
    return spec["paths"][path][method]


def resolve(spec, schema):
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def request_schema(spec, path, content_type="application/json"):
    return resolve(spec, operation(spec, path)["requestBody"]["content"][content_type]["schema"])


def ok_schema(spec, path, method="post"):
    return resolve(spec, operation(spec, path, method)["responses"]["200"]["content"]["application/json"]["schema"])


def test_fix_spec_leaves_its_input_alone(raw_spec):
    before = json.dumps(raw_spec, sort_keys=True)
    fix_spec(raw_spec)
    assert json.dumps(raw_spec, sort_keys=True) == before


def test_info_is_pinned_so_the_spec_does_not_depend_on_the_build(raw_spec, spec):
    assert raw_spec["info"]["version"] == "None"
    served_from_a_bento = {**raw_spec, "info": {**raw_spec["info"], "description": "# genmedia:abc123"}}
    assert fix_spec(served_from_a_bento) == spec
    assert spec["info"]["title"] == "genmedia" and spec["info"]["version"] == "0.1.0"


def test_task_cancel_has_its_own_operation_not_retrys(raw_spec, spec):
    retry_id = operation(raw_spec, "/generate_image_async/retry")["operationId"]
    assert operation(raw_spec, "/generate_image_async/cancel", "put")["operationId"] == retry_id
    for task in ("generate_image_async", "synthesize_speech_async"):
        assert operation(spec, f"/{task}/retry")["operationId"] == f"{task}_retry"
        assert operation(spec, f"/{task}/cancel", "put")["operationId"] == f"{task}_cancel"
    ids = [op["operationId"] for item in spec["paths"].values() for op in item.values() if "operationId" in op]
    assert len(ids) == len(set(ids))


def test_operations_are_named_by_route_under_one_gateway_tag(spec):
    assert operation(spec, "/generate_image")["operationId"] == "generate_image"
    assert operation(spec, "/caption_image")["tags"] == ["gateway"]
    assert "Service APIs" not in json.dumps(spec)


def test_task_status_enum_is_what_the_server_answers(raw_spec, spec):
    assert ok_schema(raw_spec, "/generate_image_async/status", "get")["properties"]["status"]["enum"] == [
        "in_progress",
        "success",
        "failure",
        "cancelled",
    ]
    status = ok_schema(spec, "/generate_image_async/status", "get")
    assert resolve(spec, status["properties"]["status"])["enum"] == SERVER_TASK_STATUSES
    assert "completed_at" in status["properties"] and "completed_at" not in status["required"]


def test_submit_and_retry_answer_only_task_id_and_status(raw_spec, spec):
    assert "created_at" in ok_schema(raw_spec, "/generate_image_async/submit")["required"]
    for path in ("/generate_image_async/submit", "/synthesize_speech_async/retry"):
        submitted = ok_schema(spec, path)
        assert submitted["required"] == ["task_id", "status"]
        assert set(submitted["properties"]) == {"task_id", "status"}


def test_request_bodies_are_flat_named_and_shared_by_sync_and_async_routes(spec):
    image = request_schema(spec, "/generate_image")
    assert image["title"] == "GenerateImageRequest"
    # Flat: the body's fields are the route's parameters, not wrapped under a parameter name.
    assert {"prompt", "width", "height", "seed", "format"} <= set(image["properties"])
    for path in ("/generate_image_async", "/generate_image_async/submit"):
        assert operation(spec, path)["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/GenerateImageRequest"
        }
    assert request_schema(spec, "/synthesize_speech_async/submit")["title"] == "SynthesizeSpeechRequest"


def test_optional_fields_accept_null(raw_spec, spec):
    inline = operation(raw_spec, "/generate_image")["requestBody"]["content"]["application/json"]["schema"]
    assert inline["properties"]["seed"]["type"] == "integer"
    seed = request_schema(spec, "/generate_image")["properties"]["seed"]
    assert {"type": "null"} in seed["anyOf"]


def test_the_upload_is_a_binary_string_not_type_file(raw_spec, spec):
    assert raw_spec["components"]["schemas"]["caption_image__Input"]["properties"]["image"]["type"] == "file"
    image = request_schema(spec, "/caption_image", "multipart/form-data")["properties"]["image"]
    assert image == {"format": "binary", "title": "Image", "type": "string"}
    assert '"file"' not in json.dumps(spec)


def test_results_are_one_named_schema_each(spec):
    assert ok_schema(spec, "/generate_image")["title"] == "ImageResult"
    assert ok_schema(spec, "/generate_image_async/get", "get")["title"] == "ImageResult"
    assert ok_schema(spec, "/synthesize_speech")["title"] == "SpeechResult"
    assert ok_schema(spec, "/caption_image")["title"] == "CaptionResult"
    assert not [name for name in spec["components"]["schemas"] if name.endswith(("__Input", "IODescriptor"))]


def test_every_gateway_error_is_the_contracts_error_body(spec):
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["error"] and set(error["properties"]) == {"error"}
    for item in spec["paths"].values():
        for op in item.values():
            if op.get("tags") != ["gateway"]:
                continue
            assert set(op["responses"]) == {"200"} | ERROR_STATUSES
            for status in ERROR_STATUSES:
                assert op["responses"][status]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }


def test_every_reference_resolves(spec):
    text = json.dumps(spec)
    for name in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in spec["components"]["schemas"], name
