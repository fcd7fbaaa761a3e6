"""The gateway's OpenAPI spec, corrected, as the input of the generated client (`client/`).

BentoML serves the spec at `/docs.json` from `Gateway.openapi_spec`; `gateway_spec` reads the same object
in-process, so no server (and no model store) is needed. BentoML 1.4.39's spec does not describe the server it
comes from in a few places, and a client generated from it as-is is wrong. `fix_spec` corrects exactly these,
one small function each, in the order they are listed:

1. `pin_info`: the info block names the build (`Gateway:dev`, or a Bento tag) and the version `None`; it
   becomes fixed text, so the same code always gives the same spec and the same client.
2. `tag_gateway_routes`: the tag "Service APIs" would become the Python module `service_ap_is`.
3. `name_operations`: every operation gets its route's name as its id, without the `Gateway__` prefix.
4. `name_bodies`: request and result schemas are inlined in every operation (some dropping `null` from
   optional fields), which generates a model per route; they become one named schema per shape
   (`GenerateImageRequest`, `ImageResult`, ...), taken from BentoML's own components of them (`…__Input`,
   `ImageRequestIODescriptor`), whose optional fields do allow `null`; the upload's invalid `type: file`
   becomes `string`/`binary`.
5. `drop_task_schemas`: BentoML lists its task-status schema although the gateway has no task route.
6. `error_responses`: every error is `{"error": "..."}` (shared/API.md), with statuses 400, 401, 403, 404,
   413, 429, 500 and 503; the spec listed three statuses and a `detail` field nobody sends.
7. `job_routes`: `/jobs/...` is a Starlette app mounted on the gateway (`services.gateway.jobs`), which
   BentoML's spec does not see; its routes and schemas (`Job`, `ImageJobRequest`, ...) are added as
   shared/API.md "Jobs" describes them, under the tag `jobs`.

`python -m tools.openapi_spec` prints the corrected spec.
"""

from __future__ import annotations

import copy
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
GATEWAY_TAG = "gateway"
HTTP_METHODS = ("get", "put", "post", "delete", "patch")
ERROR_STATUSES = {
    "400": "Invalid input: the message names the field",
    "401": "Missing or wrong API key",
    "403": "Client IP blocked",
    "404": "Not found (for a job: no job with that id for this API key)",
    "413": "Body or image too large",
    "429": "Rate limit hit; retry after the Retry-After header's seconds",
    "500": "Internal error",
    "503": "A model service or the storage is unavailable; retry after the Retry-After header's seconds",
}
ERROR_SCHEMA = {
    "type": "object",
    "title": "Error",
    "description": "Every error the gateway answers: a message that says what to fix.",
    "required": ["error"],
    "properties": {"error": {"type": "string", "title": "Error"}},
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


JOB_TAG = "jobs"
# Each job kind is its sync route's name and takes that route's body, named here as `name_bodies` names it.
JOB_KINDS = {"generate_image": "GenerateImageRequest", "synthesize_speech": "SynthesizeSpeechRequest"}
JOB_REQUESTS = {"generate_image": "ImageJobRequest", "synthesize_speech": "SpeechJobRequest"}
JOB_ERROR_STATUSES = {
    "409": "The Idempotency-Key was used with another body; or the job had already finished",
    "413": "Body too large",
}
WEBHOOK_EVENT_NAMES = ["started", "progress", "completed"]
WEBHOOK_FIELDS = {
    "webhook": {
        "anyOf": [{"type": "string", "format": "uri"}, {"type": "null"}],
        "title": "Webhook",
        "description": "An https URL the job's events are POSTed to, signed (Standard Webhooks).",
    },
    "webhook_events": {
        "anyOf": [{"type": "array", "items": {"type": "string", "enum": WEBHOOK_EVENT_NAMES}}, {"type": "null"}],
        "title": "Webhook Events",
        "description": "Which events to send; default completed only.",
    },
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key with the same body within 24 h answers the same job (200); another body, 409.",
    "schema": {"type": "string", "maxLength": 255},
}
LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "Resume after this event id.",
    "schema": {"type": "string"},
}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


JOB_PROPERTIES = {
    "id": {"type": "string"},
    "kind": {"type": "string", "enum": list(JOB_KINDS)},
    "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "canceled"]},
    "stage": nullable({"type": "string", "description": "What a running job does or waits for, in words."}),
    "progress": {"type": "number", "minimum": 0, "maximum": 1},
    "queue_position": nullable({"type": "integer", "description": "Jobs of its kind ahead of it, when queued."}),
    "created_at": {"type": "string"},
    "started_at": nullable({"type": "string"}),
    "finished_at": nullable({"type": "string"}),
    "result": {
        "anyOf": [ref("ImageResult"), ref("SpeechResult"), {"type": "null"}],
        "description": "The sync route's answer, once succeeded.",
    },
    "error": nullable(ref("JobError")),
    "webhook": nullable(ref("JobWebhook")),
}
JOB_SCHEMAS = {
    "Job": {
        "type": "object",
        "title": "Job",
        "required": [name for name in JOB_PROPERTIES if name != "stage"],
        "properties": JOB_PROPERTIES,
    },
    "JobSubmitted": {
        "type": "object",
        "title": "JobSubmitted",
        "required": [*(name for name in JOB_PROPERTIES if name != "stage"), "status_url", "events_url"],
        "properties": {**JOB_PROPERTIES, "status_url": {"type": "string"}, "events_url": {"type": "string"}},
    },
    "JobError": {
        "type": "object",
        "title": "JobError",
        "required": ["status", "message"],
        "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
    },
    "JobWebhook": {
        "type": "object",
        "title": "JobWebhook",
        "required": ["url", "events", "deliveries"],
        "properties": {
            "url": {"type": "string"},
            "events": {"type": "array", "items": {"type": "string", "enum": WEBHOOK_EVENT_NAMES}},
            "deliveries": {"type": "array", "items": ref("WebhookDelivery")},
        },
    },
    "WebhookDelivery": {
        "type": "object",
        "title": "WebhookDelivery",
        "description": "One event sent to the job's webhook: its webhook-id, state and last try.",
        "required": [
            "id",
            "type",
            "status",
            "attempts",
            "created_at",
            "last_attempt_at",
            "next_attempt_at",
            "response_status",
            "error",
            "finished_at",
        ],
        "properties": {
            "id": {"type": "string", "description": "The webhook-id header of every try."},
            "type": {"type": "string", "enum": ["job.started", "job.progress", "job.completed"]},
            "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
            "attempts": {"type": "integer"},
            "created_at": {"type": "string"},
            "last_attempt_at": nullable({"type": "string"}),
            "next_attempt_at": nullable({"type": "string"}),
            "response_status": nullable({"type": "integer"}),
            "error": nullable({"type": "string"}),
            "finished_at": nullable({"type": "string"}),
        },
    },
}


def gateway_spec() -> dict[str, Any]:
    """The spec BentoML serves at the gateway's `/docs.json`, as it serves it (JSON: status codes are strings)."""
    from services.gateway import Gateway

    return json.loads(json.dumps(Gateway.openapi_spec.asdict()))


def fix_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A corrected copy of a gateway spec (the module docstring lists what changes, and why)."""
    spec = copy.deepcopy(spec)
    for fix in (
        pin_info,
        tag_gateway_routes,
        name_operations,
        name_bodies,
        drop_task_schemas,
        error_responses,
        job_routes,
    ):
        fix(spec)
    return spec


def operations(spec: dict[str, Any]):
    """(path, method, operation) for every operation BentoML generated for the service's own routes."""
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if operation is not None and "x-bentoml-name" in operation:
                yield path, method, operation


def schemas(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["components"]["schemas"]


def pascal_case(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def pin_info(spec: dict[str, Any]) -> None:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    spec["info"] = {
        "title": "genmedia",
        "version": version,
        "description": "Images, speech and captions from open models, behind one gateway (see shared/API.md).",
    }


def tag_gateway_routes(spec: dict[str, Any]) -> None:
    spec["tags"] = [
        {"name": GATEWAY_TAG, "description": "The gateway's routes"} if tag["name"] == "Service APIs" else tag
        for tag in spec.get("tags", [])
    ]
    for _, _, operation in operations(spec):
        operation["tags"] = [GATEWAY_TAG]


def name_operations(spec: dict[str, Any]) -> None:
    seen: set[str] = set()
    for _, _, operation in operations(spec):
        # BentoML's name for the route, without the `Gateway__` prefix its operationId carries.
        operation["operationId"] = operation["x-bentoml-name"]
        if operation["operationId"] in seen:
            raise ValueError(f"two operations are named {operation['operationId']!r}")
        seen.add(operation["operationId"])


def name_bodies(spec: dict[str, Any]) -> None:
    components = schemas(spec)
    named: dict[str, Any] = {}

    def share(name: str, schema: dict[str, Any]) -> dict[str, str]:
        schema = {**schema, "title": name}
        if named.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas would be named {name!r}")
        return ref(name)

    for _, _, operation in operations(spec):
        api = operation["operationId"]
        for content in operation.get("requestBody", {}).get("content", {}).values():
            # BentoML's own component of the body (per-API `…__Input`, or the one its title names) allows `null`
            # for optional fields; the inlined copy does not.
            inline = content["schema"]
            schema = copy.deepcopy(components.get(f"{api}__Input") or components.get(inline.get("title", ""), inline))
            for field in schema.get("properties", {}).values():
                if field.get("type") == "file":
                    field.update(type="string", format="binary")
            content["schema"] = share(f"{pascal_case(api)}Request", schema)
        ok = operation["responses"].get("200", {})
        for content in ok.get("content", {}).values():
            title = content["schema"].get("title", "")
            if title.endswith("IODescriptor"):
                content["schema"] = share(title.removesuffix("IODescriptor"), content["schema"])
    # BentoML's per-API copies (`generate_image__Input`, `ImageResultIODescriptor`) are now duplicates.
    for name in [name for name in components if name.endswith(("__Input", "IODescriptor"))]:
        del components[name]
    components.update(named)


def drop_task_schemas(spec: dict[str, Any]) -> None:
    schemas(spec).pop("TaskStatusResponse", None)


def error_responses(spec: dict[str, Any]) -> None:
    components = schemas(spec)
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        components.pop(name, None)
    components["Error"] = copy.deepcopy(ERROR_SCHEMA)
    for _, _, operation in operations(spec):
        responses = {status: answer for status, answer in operation["responses"].items() if status.startswith("2")}
        for status, description in ERROR_STATUSES.items():
            responses[status] = {"description": description, "content": {"application/json": {"schema": ref("Error")}}}
        operation["responses"] = responses


def job_routes(spec: dict[str, Any]) -> None:
    components = schemas(spec)
    for kind, request in JOB_KINDS.items():
        job_request = copy.deepcopy(components[request])
        job_request["title"] = JOB_REQUESTS[kind]
        job_request["properties"].update(copy.deepcopy(WEBHOOK_FIELDS))
        components[JOB_REQUESTS[kind]] = job_request
    components.update(copy.deepcopy(JOB_SCHEMAS))
    spec.setdefault("tags", []).append({"name": JOB_TAG, "description": "Durable jobs: submit, follow, cancel"})

    def answers(ok: dict[str, Any], *statuses: str) -> dict[str, Any]:
        errors = {status: ERROR_STATUSES[status] for status in ("400", "401", "403", "404", "429", "500", "503")}
        errors.update({status: JOB_ERROR_STATUSES[status] for status in statuses})
        return {
            **ok,
            **{
                status: {"description": text, "content": {"application/json": {"schema": ref("Error")}}}
                for status, text in sorted(errors.items())
            },
        }

    def json_answer(description: str, schema: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}

    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    for kind in JOB_KINDS:
        spec["paths"][f"/jobs/{kind}"] = {
            "post": {
                "tags": [JOB_TAG],
                "operationId": f"submit_{kind}_job",
                "summary": f"Submit a /{kind} request as a durable job",
                "parameters": [IDEMPOTENCY_KEY],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref(JOB_REQUESTS[kind])}},
                },
                "responses": answers(
                    {
                        "202": json_answer("The job, queued", "JobSubmitted"),
                        "200": json_answer("The job this Idempotency-Key made earlier", "JobSubmitted"),
                    },
                    "409",
                    "413",
                ),
            }
        }
    spec["paths"]["/jobs/{job_id}"] = {
        "get": {
            "tags": [JOB_TAG],
            "operationId": "get_job",
            "summary": "The job as it is now",
            "parameters": [job_id],
            "responses": answers({"200": json_answer("The job", "Job")}),
        }
    }
    spec["paths"]["/jobs/{job_id}/events"] = {
        "get": {
            "tags": [JOB_TAG],
            "operationId": "job_events",
            "summary": "Server-sent events: the job now, then at each change; resumable with Last-Event-ID",
            "parameters": [job_id, LAST_EVENT_ID],
            # text/event-stream: each event's `data` is a `Job`; the generator does not read streams.
            "responses": answers({"200": {"description": "text/event-stream of `Job`s, ending after a final status"}}),
        }
    }
    spec["paths"]["/jobs/{job_id}/cancel"] = {
        "post": {
            "tags": [JOB_TAG],
            "operationId": "cancel_job",
            "summary": "Cancel a queued or running job",
            "parameters": [job_id],
            "responses": answers({"200": json_answer("The job, canceled", "Job")}, "409"),
        }
    }


def main() -> None:
    json.dump(fix_spec(gateway_spec()), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
