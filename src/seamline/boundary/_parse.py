"""Turning raw model output into a typed candidate, or a reject that says what was wrong.

Models wrap JSON in prose and code fences, truncate it, emit NaN, nest it absurdly or stream
megabytes. The parser finds the JSON object, bounds its size and depth, refuses non-finite and
absurdly long numbers, then validates it against the candidate's pydantic model (unknown
fields are refused unless the model allows them). Every failure is a :class:`Reject` with a
machine-readable reason code and the offending field; nothing raises.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pydantic

from seamline.boundary._verdicts import Reject
from seamline.models import ModelResponse

__all__ = ["ParseFailure", "SchemaParser", "extract_json"]

M = TypeVar("M", bound=pydantic.BaseModel)

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


class ParseFailure(ValueError):
    def __init__(self, code: str, message: str, hint: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.hint, self.field = code, message, hint, field


def _reject_constant(name: str) -> Any:
    raise ParseFailure(
        "non_finite_number",
        f"output contains {name}, which is not a number",
        "use finite numbers only",
    )


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ParseFailure(
            "non_finite_number",
            f"number {text[:40]} overflows a float",
            "use numbers within the documented range",
        )
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 30:
        raise ParseFailure(
            "number_too_large",
            f"integer with {len(text)} digits",
            "use numbers within the documented range",
        )
    return int(text)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            # JSON parsers disagree on which duplicate wins; an ambiguous object is refused.
            raise ParseFailure(
                "duplicate_key",
                f"key {key!r} appears twice",
                "give each field exactly once",
                field=key,
            )
        seen[key] = value
    return seen


def _check_tree(value: Any, limit: int) -> None:
    """Depth bound, and no lone surrogates (text no store or API can carry)."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > limit:
            raise ParseFailure(
                "too_deep",
                f"output nests deeper than {limit} levels",
                f"keep nesting under {limit} levels",
                field=path or None,
            )
        if isinstance(node, dict):
            for k, v in node.items():
                where = f"{path}.{k}" if path else k
                _check_text(k, where)
                stack.append((v, depth + 1, where))
        elif isinstance(node, list):
            stack.extend((v, depth + 1, f"{path}[{i}]") for i, v in enumerate(node))
        elif isinstance(node, str):
            _check_text(node, path)


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ParseFailure(
            "invalid_unicode",
            f"{path or 'a key'} holds a lone surrogate",
            "use well-formed Unicode text",
            field=path or None,
        ) from None


def _candidates(text: str) -> list[str]:
    """Places JSON may be: the whole text, fenced blocks, then the outermost {...} span."""
    found = [text.strip()]
    found += [m.group(1).strip() for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        found.append(text[start : end + 1])
    return found


def extract_json(text: str, *, max_bytes: int = 64 * 1024, max_depth: int = 32) -> Any:
    """The first JSON object found in ``text``; raises :class:`ParseFailure` saying why not."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ParseFailure(
            "output_too_large",
            f"output is {size:,} bytes, limit {max_bytes:,}",
            f"answer with one JSON object under {max_bytes:,} bytes",
        )
    last: ParseFailure | None = None
    for n, candidate in enumerate(_candidates(text)):
        try:
            value = json.loads(
                candidate,
                parse_constant=_reject_constant,
                parse_float=_finite_float,
                parse_int=_bounded_int,
                object_pairs_hook=_no_duplicate_keys,
            )
        except ParseFailure as exc:
            raise exc
        except RecursionError:
            raise ParseFailure(
                "too_deep",
                "output is nested too deeply to parse",
                f"keep nesting under {max_depth} levels",
            ) from None
        except ValueError as exc:
            last = ParseFailure(
                "malformed_json",
                f"not valid JSON: {exc}",
                "answer with exactly one JSON object and nothing else",
            )
            continue
        if not isinstance(value, dict):
            last = ParseFailure(
                "not_an_object",
                f"expected a JSON object, got {type(value).__name__}",
                "answer with one JSON object",
            )
            if n == 0:  # the whole output is JSON of another shape: do not dig inside it
                raise last
            continue
        _check_tree(value, max_depth)
        return value
    if last is None:
        last = ParseFailure(
            "malformed_json",
            "no JSON object in the output",
            "answer with exactly one JSON object and nothing else",
        )
    raise last


@dataclass(frozen=True)
class SchemaParser(Generic[M]):
    """Parses a response into ``schema`` (from its text, or from the named tool call)."""

    schema: type[M]
    max_bytes: int = 64 * 1024
    max_depth: int = 32
    tool: str | None = None
    name: str = "schema"

    def parse(self, response: ModelResponse) -> M | Reject:
        text = response.text
        if self.tool is not None:
            calls = [c for c in response.tool_calls if c.name == self.tool]
            if not calls:
                return self._reject(
                    "missing_tool_call",
                    f"no call to tool {self.tool!r}",
                    f"call the tool {self.tool!r} with the arguments",
                )
            text = calls[0].arguments
        try:
            raw = extract_json(text, max_bytes=self.max_bytes, max_depth=self.max_depth)
        except ParseFailure as exc:
            if response.finish_reason == "length" and exc.code == "malformed_json":
                return self._reject(
                    "truncated_output",
                    "output was cut off at the token limit",
                    "give a shorter answer: one compact JSON object",
                )
            return self._reject(exc.code, exc.message, exc.hint, exc.field)
        try:
            return self.schema.model_validate(raw)
        except pydantic.ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in error["loc"]) or None
            return self._reject(
                "schema_violation",
                f"{len(exc.errors())} schema error(s); first at {where or 'top level'}: "
                f"{error['msg']}",
                f"follow the {self.schema.__name__} schema exactly: {error['msg']}",
                where,
            )

    def _reject(self, code: str, message: str, hint: str, field: str | None = None) -> Reject:
        return Reject(
            verifier=self.name,
            rule_id=f"{self.name}.{code}",
            reason_code=code,
            message=message,
            hint=hint,
            retryable=True,
            field=field,
        )
