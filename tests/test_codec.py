"""The JSON codec: exact round trips, canonical text, clear refusals."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seamline import codec
from seamline.errors import CodecError


class Term(enum.StrEnum):
    ONE_YEAR = "one_year"
    TWO_YEAR = "two_year"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Offer(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)

    discount: Decimal
    term: Term
    level: Level
    sent_at: datetime
    ref: UUID
    notes: list[str] = []


@dataclass(frozen=True)
class Signal:
    name: str
    value: Decimal
    seen_at: datetime


aware = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    ),
)
decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None)


@given(
    discount=decimals,
    term=st.sampled_from(Term),
    level=st.sampled_from(Level),
    sent_at=aware,
    ref=st.uuids(),
    notes=st.lists(st.text(max_size=20), max_size=3),
)
def test_pydantic_models_round_trip_exactly(
    discount: Decimal, term: Term, level: Level, sent_at: datetime, ref: UUID, notes: list[str]
) -> None:
    """A model with Decimal, enums, aware datetime and UUID decodes to an equal model."""
    offer = Offer(discount=discount, term=term, level=level, sent_at=sent_at, ref=ref, notes=notes)
    back = codec.decode(codec.encode(offer), Offer)
    assert back == offer
    assert back.sent_at.utcoffset() == sent_at.utcoffset()
    assert str(back.discount) == str(discount)  # same digits and exponent, not just equal
    assert type(back.term) is Term
    assert type(back.level) is Level


@given(name=st.text(), value=decimals, seen_at=aware)
def test_dataclasses_round_trip_exactly(name: str, value: Decimal, seen_at: datetime) -> None:
    """A frozen dataclass decodes back equal when its type is given."""
    signal = Signal(name, value, seen_at)
    assert codec.decode(codec.encode(signal), Signal) == signal


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_plain_json_values_round_trip(value: object) -> None:
    """Plain JSON values decode to equal values without any declared type."""
    assert codec.decode(codec.encode(value)) == value


def test_encoding_is_canonical() -> None:
    """Equal values give identical text whatever the key order: fit for hashing."""
    assert codec.encode({"b": 1, "a": [1, 2]}) == codec.encode({"a": [1, 2], "b": 1})
    assert codec.encode({"b": 1, "a": 2}) == '{"a":2,"b":1}'


def test_typed_plain_containers_restore_decimals_and_datetimes() -> None:
    """Decimals and datetimes inside plain dicts come back exactly when the type is declared."""
    value = {"price": Decimal("19.990"), "at": datetime(2026, 3, 1, 12, tzinfo=UTC)}
    text = codec.encode(value)
    assert codec.decode(text, dict[str, Decimal | datetime]) == value
    assert codec.decode(text, dict[str, Decimal | datetime])["price"].as_tuple().exponent == -3


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, {"x": [1, math.nan]}])
def test_nan_and_infinity_are_refused(bad: object) -> None:
    """NaN and infinities have no exact JSON form, so they are refused with a hint."""
    with pytest.raises(CodecError, match="NaN and infinite"):
        codec.encode(bad)


def test_unserialisable_objects_are_refused() -> None:
    """An arbitrary object is refused, naming its type and what is accepted."""

    class Opaque:
        pass

    with pytest.raises(CodecError, match=r"Opaque.*pydantic models, dataclasses"):
        codec.encode({"x": Opaque()})


def test_size_limit_is_enforced_with_numbers() -> None:
    """Text over the limit is refused with its size and the limit in the message."""
    with pytest.raises(CodecError, match=r"over the 100-byte limit"):
        codec.encode("x" * 200, max_bytes=100)
    assert codec.encode("x" * 50, max_bytes=100)


def test_undecodable_text_says_what_was_expected() -> None:
    """Text that is not valid for the declared type names that type."""
    with pytest.raises(CodecError, match="Offer"):
        codec.decode('{"discount": "abc"}', Offer)
    with pytest.raises(CodecError):
        codec.decode("{not json")
