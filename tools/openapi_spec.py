"""The gateway's OpenAPI spec, corrected, as the input of the generated client (`client/`).

BentoML serves the spec at `/docs.json` from `Gateway.openapi_spec`; `gateway_spec` reads the same object
in-process, so no server (and no model store) is needed. BentoML 1.4.39's spec does not describe the server it
comes from in a few places, and a client generated from it as-is is wrong. `fix_spec` corrects exactly these,
one small function each, in the order they are listed:

1. `pin_info`: the info block names the build (`Gateway:dev`, or a Bento tag) and the version `None`; it
   becomes fixed text, so the same code always gives the same spec and the same client.
2. `tag_gateway_routes`: the tag "Service APIs" would become the Python module `service_ap_is`.
3. `name_operations`: every task's `retry` (POST) and `cancel` (PUT) share one operationId, so the generated
   `retry` sent `PUT /cancel`; each operation gets its own id, without the `Gateway__` prefix.
4. `name_bodies`: request and result schemas are inlined in every operation (some dropping `null` from
   optional fields), which generates a model per route; they become one named schema per shape
   (`GenerateImageRequest`, `ImageResult`, ...), taken from the routes' request objects (or BentoML's own
   per-API input schemas), whose optional fields do allow `null`; the upload's invalid `type: file`
   becomes `string`/`binary`.
5. `task_status_values`: the status enum says `success/failure/cancelled`; the server answers BentoML's
   `ResultStatus` values (`pending/in_progress/completed/failed/canceled`), plus `completed_at`.
6. `submit_response`: `/submit` and `/retry` answer only `task_id` and `status`, but the schema requires
   `created_at` too, so parsing every answer failed; they get their own `TaskSubmitted` schema.
7. `error_responses`: every error is `{"error": "..."}` (shared/API.md), with statuses 400, 401, 403, 404,
   413, 429, 500 and 503; the spec listed three statuses and a `detail` field nobody sends.

`python -m tools.openapi_spec` prints the corrected spec.
"""

from __future__ import annotations

import copy
import json
import re
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
    "404": "Not found (for a task: no task with that id)",
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
TASK_SUBMITTED_SCHEMA = {
    "type": "object",
    "title": "TaskSubmitted",
    "required": ["task_id", "status"],
    "properties": {
        "task_id": {"type": "string", "title": "Task Id"},
        "status": {"$ref": "#/components/schemas/TaskStatus"},
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
        task_status_values,
        submit_response,
        error_responses,
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


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


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
    for path, _, operation in operations(spec):
        name = operation["x-bentoml-name"]
        if path.endswith("/cancel"):
            name = name.removesuffix("_retry") + "_cancel"
        operation["x-bentoml-name"] = name
        # BentoML's name for the route, without the `Gateway__` prefix its operationId carries.
        operation["operationId"] = name
        if operation["operationId"] in seen:
            raise ValueError(f"two operations are named {operation['operationId']!r}")
        seen.add(operation["operationId"])


def api_name(operation_id: str) -> str:
    """The API an operation belongs to: `generate_image_async_submit` → `generate_image`."""
    return re.sub(r"(_async)?(_submit|_status|_result|_retry|_cancel)?$", "", operation_id)


def name_bodies(spec: dict[str, Any]) -> None:
    components = schemas(spec)
    named: dict[str, Any] = {}

    def share(name: str, schema: dict[str, Any]) -> dict[str, str]:
        schema = {**schema, "title": name}
        if named.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas would be named {name!r}")
        return ref(name)

    for _, _, operation in operations(spec):
        api = api_name(operation["operationId"])
        for content in operation.get("requestBody", {}).get("content", {}).values():
            # The route's own input model (a request object, or BentoML's per-API input schema) allows `null`
            # for optional fields; the inlined copy does not.
            schema = copy.deepcopy(components.get(f"{api}__Input") or input_model_schema(api) or content["schema"])
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


def input_model_schema(api: str) -> dict[str, Any] | None:
    """The JSON schema of a gateway route's root input (its request object), or None."""
    from services.gateway import Gateway

    method = Gateway.apis.get(api)
    if method is None or not getattr(method.input_spec, "__root_input__", False):
        return None
    schema = method.input_spec.model_json_schema()
    schema.pop("title", None)
    return schema


def task_status_values(spec: dict[str, Any]) -> None:
    from _bentoml_impl.tasks.result import ResultStatus

    components = schemas(spec)
    components["TaskStatus"] = {
        "type": "string",
        "title": "TaskStatus",
        "enum": [status.value for status in ResultStatus],
    }
    status = components["TaskStatusResponse"]
    status["properties"]["status"] = ref("TaskStatus")
    status["properties"]["completed_at"] = {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "title": "Completed At",
    }


def submit_response(spec: dict[str, Any]) -> None:
    schemas(spec)["TaskSubmitted"] = copy.deepcopy(TASK_SUBMITTED_SCHEMA)
    for path, _, operation in operations(spec):
        if path.endswith(("/submit", "/retry")):
            operation["responses"]["200"]["content"]["application/json"]["schema"] = ref("TaskSubmitted")


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


def main() -> None:
    json.dump(fix_spec(gateway_spec()), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
