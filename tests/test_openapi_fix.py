"""`tools.openapi_spec.fix_spec`: each defect of BentoML 1.4.39's gateway spec, present before and gone after.

The spec is the real one (`Gateway.openapi_spec`, what `/docs.json` serves), read in-process.
"""

from __future__ import annotations

import json

import pytest

from tools.openapi_spec import fix_spec, gateway_spec

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


def test_operation_ids_are_unique():
    paths = fix_spec(gateway_spec())["paths"].values()
    ids = [op["operationId"] for item in paths for op in item.values() if "operationId" in op]
    assert len(ids) == len(set(ids))


def test_operations_are_named_by_route_under_one_gateway_tag(spec):
    assert operation(spec, "/generate_image")["operationId"] == "generate_image"
    assert operation(spec, "/caption_image")["tags"] == ["gateway"]
    assert "Service APIs" not in json.dumps(spec)


def test_no_task_schema_is_left_without_a_task_route(raw_spec, spec):
    assert "TaskStatusResponse" in raw_spec["components"]["schemas"]
    assert not [path for path in spec["paths"] if "_async" in path]
    assert "TaskStatusResponse" not in spec["components"]["schemas"]


def test_request_bodies_are_flat_named_and_shared_by_sync_and_job_routes(spec):
    image = request_schema(spec, "/generate_image")
    assert image["title"] == "GenerateImageRequest"
    # Flat: the body's fields are the route's parameters, not wrapped under a parameter name.
    assert {"prompt", "width", "height", "seed", "format"} <= set(image["properties"])
    job = request_schema(spec, "/jobs/generate_image")
    assert job["title"] == "ImageJobRequest"
    assert job["properties"] == {
        **image["properties"],
        "webhook": job["properties"]["webhook"],
        "webhook_events": job["properties"]["webhook_events"],
    }
    assert request_schema(spec, "/jobs/synthesize_speech")["title"] == "SpeechJobRequest"


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


def test_job_routes_are_described_as_the_contract_has_them(raw_spec, spec):
    assert not [path for path in raw_spec["paths"] if path.startswith("/jobs")]  # a mounted app: unseen
    submit = operation(spec, "/jobs/generate_image")
    assert submit["tags"] == ["jobs"] and submit["operationId"] == "submit_generate_image_job"
    assert [parameter["name"] for parameter in submit["parameters"]] == ["Idempotency-Key"]
    assert {"200", "202", "409"} <= set(submit["responses"])
    submitted = resolve(spec, submit["responses"]["202"]["content"]["application/json"]["schema"])
    assert {"id", "kind", "status", "created_at", "status_url", "events_url"} <= set(submitted["required"])
    job = resolve(
        spec, operation(spec, "/jobs/{job_id}", "get")["responses"]["200"]["content"]["application/json"]["schema"]
    )
    assert set(job["required"]) == {
        "id",
        "kind",
        "status",
        "progress",
        "queue_position",
        "created_at",
        "started_at",
        "finished_at",
        "result",
        "error",
        "webhook",
    }
    assert resolve(spec, job["properties"]["status"])["enum"] == [
        "queued",
        "running",
        "succeeded",
        "failed",
        "canceled",
    ]
    assert "Last-Event-ID" in [p["name"] for p in operation(spec, "/jobs/{job_id}/events", "get")["parameters"]]
    assert "409" in operation(spec, "/jobs/{job_id}/cancel")["responses"]
