"""JSON that PostgreSQL and the push providers can hold, checked once where it enters.

PostgreSQL refuses NUL in text and jsonb (the request then failed as a 503), orjson refuses
integers beyond 64 bits and nesting deeper than 255 levels, and Python's parser raises
RecursionError on a few thousand nested brackets. Every API body goes through
StrictJSONParser, so each string field, key and `data` value is covered in one place; the
admin's compose form checks its `data` with the same rules (json_value_problems).
"""

import json

from rest_framework import exceptions
from rest_framework.parsers import JSONParser

# Nesting levels allowed in a request body. A send is `data` inside the body (2 levels) plus
# whatever the app nests in `data`; 32 is far beyond any real payload and far below orjson's
# 255 and the interpreter's recursion limit.
MAX_JSON_DEPTH = 32
# PostgreSQL bigint, orjson and every provider's JSON parser hold signed 64-bit integers.
MIN_JSON_INT, MAX_JSON_INT = -(2**63), 2**63 - 1

NUL = "\x00"


def json_value_problems(value, path: str = "", depth: int = 1) -> dict[str, list[str]]:
    """Where `value` breaks the rules above: {"dotted.path": [message]}; empty when it is fine.

    Iterative, so the check itself cannot overflow the stack on a deep value.
    """
    problems: dict[str, list[str]] = {}
    pending = [(value, path, depth)]
    while pending:
        item, where, level = pending.pop()
        if level > MAX_JSON_DEPTH:
            problems.setdefault(where or "non_field_errors", []).append(
                f"Nested more than {MAX_JSON_DEPTH} levels deep."
            )
            continue
        if isinstance(item, str):
            if NUL in item:
                problems.setdefault(where or "non_field_errors", []).append("NUL characters are not allowed.")
        elif isinstance(item, bool) or item is None or isinstance(item, float):
            continue
        elif isinstance(item, int):
            if not MIN_JSON_INT <= item <= MAX_JSON_INT:
                problems.setdefault(where or "non_field_errors", []).append(
                    "Integers must fit in 64 bits (signed)."
                )
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and NUL in key:
                    problems.setdefault(where or "non_field_errors", []).append(
                        "NUL characters are not allowed in keys."
                    )
                    continue
                pending.append((child, child_path, level + 1))
        elif isinstance(item, list | tuple):
            for index, child in enumerate(item):
                pending.append((child, f"{where}.{index}" if where else str(index), level + 1))
    return problems


def strict_loads(text: str | bytes):
    """json.loads that refuses NaN/Infinity and turns runaway nesting into a ValueError."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def strict_body(raw: bytes, encoding: str = "utf-8"):
    """A request body as JSON under the rules above; ParseError, or a ValidationError naming
    the field that breaks a rule."""
    try:
        data = strict_loads(raw.decode(encoding))
    except (ValueError, UnicodeDecodeError) as exc:
        raise exceptions.ParseError(f"JSON parse error - {exc}") from None
    problems = json_value_problems(data)
    if problems:
        raise exceptions.ValidationError(problems)
    return data


class StrictJSONParser(JSONParser):
    """DRF's JSON parser, then the rules above: a broken rule is a 400 naming the field."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", "utf-8")
        return strict_body(stream.read() if stream is not None else b"", encoding)
