"""The one JSON codec for everything seamline persists.

Encoding goes through pydantic's serialiser, so pydantic models, dataclasses, datetimes,
decimals, enums and UUIDs all have one JSON form. Decoding takes the type the caller expects
and validates against it, which is what makes those values round-trip exactly: a ``Decimal``
comes back as the same ``Decimal``, an aware ``datetime`` with the same instant and offset, an
enum as its member. Output is canonical (sorted keys, no spaces), so equal values give equal
text and can be hashed.

Values JSON cannot hold faithfully are refused rather than mangled: NaN and infinities, objects
pydantic cannot serialise, and text over the size limit.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, TypeVar, overload

import pydantic
import pydantic_core

from seamline.errors import CodecError

__all__ = ["DEFAULT_MAX_BYTES", "decode", "encode"]

T = TypeVar("T")

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
"""Largest encoded payload accepted by default (4 MiB); a store row is not a blob store."""


def encode(value: object, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Encode ``value`` as canonical JSON text, or raise :class:`CodecError` saying why not."""
    try:
        plain = pydantic_core.to_jsonable_python(value, serialize_unknown=False)
    except pydantic_core.PydanticSerializationError as exc:
        raise CodecError(
            f"cannot encode a value of type {type(value).__name__}: {exc}. Persisted payloads must "
            "be pydantic models, dataclasses or plain JSON values (dict, list, str, int, float, "
            "bool, None, datetime, Decimal, Enum, UUID)."
        ) from exc
    try:
        text = json.dumps(
            plain, allow_nan=False, ensure_ascii=False, separators=(",", ":"), sort_keys=True
        )
    except ValueError as exc:
        raise CodecError(
            f"cannot encode a value of type {type(value).__name__}: {exc}. NaN and infinite floats "
            "have no exact JSON form; use None, a Decimal or a bounded number instead."
        ) from exc
    except TypeError as exc:  # e.g. a dict with tuple keys survives to_jsonable_python
        raise CodecError(f"cannot encode a value of type {type(value).__name__}: {exc}.") from exc
    except RecursionError as exc:
        raise CodecError("cannot encode a value nested too deeply for JSON.") from exc
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise CodecError(
            f"cannot encode text with a lone surrogate at position {exc.start}; no database "
            "stores it. Clean the text (e.g. text.encode('utf-8', 'replace').decode())."
        ) from exc
    if size > max_bytes:
        raise CodecError(
            f"encoded payload is {size:,} bytes, over the {max_bytes:,}-byte limit; store large "
            "artefacts elsewhere and persist a reference to them."
        )
    return text


@lru_cache(maxsize=256)
def _adapter(type_: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(type_)


@overload
def decode(text: str | bytes) -> Any: ...
@overload
def decode(text: str | bytes, type_: type[T]) -> T: ...
@overload
def decode(text: str | bytes, type_: Any) -> Any: ...


def decode(text: str | bytes, type_: Any = Any) -> Any:
    """Decode JSON text, validating it as ``type_`` (plain JSON values when no type is given)."""
    try:
        if type_ is Any:
            return json.loads(text)
        return _adapter(type_).validate_json(text)
    except (ValueError, pydantic.ValidationError) as exc:
        name = getattr(type_, "__name__", repr(type_))
        raise CodecError(f"stored text does not decode as {name}: {exc}") from exc
