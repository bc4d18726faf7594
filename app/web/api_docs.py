"""The admin API's reference page (`/docs`) read from the OpenAPI schema: for each operation its
parameters and the fields of its request body (type, bounds, default, whether required), so that
an operator can write a request without reading the JSON schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BodyField:
    name: str
    kind: str  # type, with bounds and choices
    required: bool
    default: str
    meaning: str


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    reference = node.get("$ref")
    if not reference:
        return node
    found: Any = schema
    for part in reference.removeprefix("#/").split("/"):
        found = found[part]
    return dict(found)


def _kind(schema: dict[str, Any], node: dict[str, Any]) -> str:
    node = _resolve(schema, node)
    if "anyOf" in node:
        return " or ".join(_kind(schema, option) for option in node["anyOf"])
    if "enum" in node:
        return "one of " + ", ".join(str(value) for value in node["enum"])
    kind = str(node.get("type", "any"))
    if kind == "array":
        kind = f"list of {_kind(schema, node.get('items', {}))}"
        if "maxItems" in node:
            kind += f" (at most {node['maxItems']})"
    if node.get("format") == "binary":
        kind = "file"
    bounds = [
        f"{word} {node[key]:g}"
        for key, word in (("minimum", "≥"), ("maximum", "≤"))
        if isinstance(node.get(key), int | float)
    ]
    if "maxLength" in node:
        bounds.append(f"up to {node['maxLength']} characters")
    return f"{kind} ({', '.join(bounds)})" if bounds else kind


def request_body_fields(schema: dict[str, Any], operation: dict[str, Any]) -> list[BodyField]:
    """The fields of an operation's request body, in the schema's order; none without a body."""
    body = operation.get("requestBody")
    if not body:
        return []
    (content,) = body["content"].values()
    model = _resolve(schema, content.get("schema", {}))
    required = set(model.get("required", []))
    return [
        BodyField(
            name=name,
            kind=_kind(schema, field),
            required=name in required,
            default="" if "default" not in field else repr(field["default"]),
            meaning=str(field.get("description", "")),
        )
        for name, field in model.get("properties", {}).items()
    ]
