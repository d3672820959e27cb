"""The published JSON Schema of ``MessageIn``: what validation enforces, said in the contract.

pydantic derives the shape; the rules checked by hand (text or html required, at
least one recipient, the header limits) are added here so ``/openapi.json`` matches
what the server does. Limits are settings: the numbers published are their defaults.
"""

from __future__ import annotations

from typing import Any

from mailgate.settings import LimitSettings

__all__ = ["message_schema"]

_DEFAULTS = LimitSettings()


def message_schema(schema: dict[str, Any], _: type) -> None:
    """``json_schema_extra`` hook of ``MessageIn``: edits the generated schema in place."""
    props: dict[str, Any] = schema["properties"]
    schema["description"] = (
        f"{schema.get('description', '')} Limits shown (maxLength, maxProperties) are the"
        " defaults of the server's `limits` settings; a server may be configured otherwise."
        " Control characters other than TAB are refused in header fields."
    ).strip()
    # text or html: a null one does not count, as validation treats null as absent
    schema["anyOf"] = [
        {"required": [body], "properties": {body: {"type": "string"}}} for body in ("text", "html")
    ]
    props["subject"]["maxLength"] = _DEFAULTS.max_subject_length
    props["headers"]["maxProperties"] = _DEFAULTS.max_headers
    props["headers"]["additionalProperties"]["maxLength"] = _DEFAULTS.max_header_value
    for variant in props["to"]["anyOf"]:
        if variant.get("type") == "array":
            variant["minItems"] = 1
    props["metadata"]["description"] = (
        f"Any JSON object, at most {_DEFAULTS.max_metadata_depth} levels deep and"
        f" {_DEFAULTS.max_metadata_bytes} bytes as compact UTF-8 JSON (defaults)."
    )
