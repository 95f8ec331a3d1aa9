"""The renewal workload's customers: the IBM Telco churn CSV, loaded and checked, or synthesised.

``load_customers`` reads the published file (or any file with its 21 columns) and returns every
row it could use as a validated :class:`Customer`, with one :class:`RowIssue` for each thing it
repaired or skipped. Nothing changes silently, with one exception: whitespace around a value is
trimmed without an issue, because it carries no meaning in this file and reporting it would
bury real problems. The one whitespace-only value in the published file, a TotalCharges of
``" "`` on the 11 customers with tenure 0, falls under a declared repair rule instead:

``total_charges.blank_new_customer``
    TotalCharges blank and tenure 0: the customer has not been billed yet, so 0.00.
``total_charges.blank_estimated``
    TotalCharges blank and tenure > 0: tenure x MonthlyCharges, which is what the published
    totals average (their ratio to that product has mean 1.000). Repaired rather than skipped
    so that one missing total does not drop a customer from a renewal cohort.

Every other bad row is skipped, or with ``on_bad_row="fail"`` stops the load, with an issue that
names the line, the column, the value seen (truncated) and what was expected; a row is also bad
when its services contradict each other (extra lines without a phone, extras without internet).
A second row with a customerID already loaded is skipped. Columns beyond the 21 are reported once
(line 1) and ignored. A missing or repeated column, or a file that is missing, unreadable, binary,
empty or beyond the csv module (a field over 128 KiB), is a :class:`ConfigError`.

Each row is checked here, for messages that name the rule broken, and then validated by the
pydantic model as a guard: a row this module passes and the model rejects is a bug here, and
raises. Validation through the model took about 45 ms for the 7,043 published rows, against
50-65 ms for ``model_construct``, so nothing is gained by skipping it; the whole load takes
about 0.14 s.

``synthetic_cohort`` draws customers with the published file's shares and rates (measured on it
and rounded); ``describe`` summarises a cohort, so that tests and the CLI can show it is
realistic.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import random
import re
import string
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal, TypedDict

from seamline.errors import ConfigError
from seamline.workloads.renewal._customer import CONTRACTS, Customer

__all__ = [
    "CohortSummary",
    "LoadResult",
    "RowIssue",
    "TELCO_COLUMNS",
    "describe",
    "load_customers",
    "synthetic_cohort",
]

_HEADER = (
    "customerID,gender,SeniorCitizen,Partner,Dependents,tenure,PhoneService,MultipleLines,"
    "InternetService,OnlineSecurity,OnlineBackup,DeviceProtection,TechSupport,StreamingTV,"
    "StreamingMovies,Contract,PaperlessBilling,PaymentMethod,MonthlyCharges,TotalCharges,Churn"
)
TELCO_COLUMNS: tuple[str, ...] = tuple(_HEADER.split(","))
"""The 21 columns of the Telco customer churn CSV, in the published order."""

# The Customer field of each column is its name in snake case: customerID -> customer_id.
_FIELD_OF: Mapping[str, str] = {
    column: re.sub(r"(?<=[a-z])(?=[A-Z])", "_", column).lower() for column in TELCO_COLUMNS
}
_YES_NO: Mapping[str, bool] = {"Yes": True, "No": False}
_FLAGS: Mapping[str, Mapping[str, bool]] = {
    "SeniorCitizen": {"1": True, "0": False},
    **dict.fromkeys(("Partner", "Dependents", "PhoneService", "PaperlessBilling"), _YES_NO),
    "Churn": _YES_NO,
}
_EXTRAS = (  # the services that need internet
    "OnlineSecurity",
    "OnlineBackup",
    "DeviceProtection",
    "TechSupport",
    "StreamingTV",
    "StreamingMovies",
)
# (column, the column it depends on, the value it must hold when that one is "No", rule)
_DEPENDS_ON = (
    ("MultipleLines", "PhoneService", "No phone service", "consistency.phone"),
    *((x, "InternetService", "No internet service", "consistency.internet") for x in _EXTRAS),
)


def _literal_values(field: str) -> tuple[str, ...]:
    annotation = Customer.model_fields[field].annotation
    return typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()


# The categorical columns and their values come from the model's Literal types, so the two
# cannot drift apart.
_CHOICES: Mapping[str, tuple[str, ...]] = {
    column: values for column in TELCO_COLUMNS if (values := _literal_values(_FIELD_OF[column]))
}
_ID = re.compile(r"[0-9]{4}-[A-Z]{5}")  # [0-9], not \d: \d also matches non-ASCII digits
_INTEGER = re.compile(r"[0-9]+")
_AMOUNT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")  # no exponents, NaN or "1_000"
_CENT = Decimal("0.01")
_MAX_TENURE = 120  # the model's bound
_MAX_MONTHLY = Decimal(1000)  # the model's bound
_DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # the published file is under 1 MB
_SHOWN_CHARS = 40
_EXPECTED_FILE = "expected the IBM Telco customer churn CSV"


@dataclass(frozen=True, slots=True)
class RowIssue:
    """One thing the loader repaired or skipped. ``line`` is the physical line in the file (the
    header is line 1); ``column`` is the CSV column name, or None when the whole row is at
    fault; ``rule`` is a stable id such as ``total_charges.blank_new_customer``."""

    line: int
    customer_id: str | None
    column: str | None
    problem: str
    action: Literal["repaired", "skipped"]
    rule: str
    kind: Literal["row_issue"] = "row_issue"


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The customers a file yielded and every issue met on the way. ``rows_read`` counts the
    records after the header, blank and bad ones included; ``sha256`` is of the file's bytes."""

    customers: tuple[Customer, ...]
    issues: tuple[RowIssue, ...]
    path: Path
    rows_read: int
    sha256: str
    kind: Literal["load_result"] = "load_result"


@dataclass(frozen=True, slots=True)
class _Problem:
    column: str | None
    rule: str
    text: str


class _BadValue(Exception):
    """One field cannot be used: ``what`` is wrong with it, and what was ``expected``."""

    def __init__(self, rule: str, what: str, expected: str) -> None:
        super().__init__(what)
        self.rule, self.what, self.expected = rule, what, expected


def _show(raw: str) -> str:
    if len(raw) <= _SHOWN_CHARS:
        return repr(raw)
    return f"{raw[:_SHOWN_CHARS]!r}... ({len(raw)} characters)"


def load_customers(
    path: str | os.PathLike[str],
    *,
    on_bad_row: Literal["skip", "fail"] = "skip",
    max_bytes: int = _DEFAULT_MAX_BYTES,
) -> LoadResult:
    """Read a Telco customer churn CSV; the module docstring lists the rules applied."""
    if on_bad_row not in ("skip", "fail"):
        raise ConfigError(f"on_bad_row is {on_bad_row!r}; expected 'skip' or 'fail'")
    source = Path(path)
    data = _read_bytes(source, max_bytes)
    reader = csv.reader(io.StringIO(_decode(source, data), newline=""))
    customers: list[Customer] = []
    first_line: dict[str, int] = {}  # customerID -> the line it was loaded from
    rows_read = 0
    try:
        header = [name.strip() for name in next(reader)]
        positions, issues = _read_header(source, header)
        last_line = reader.line_num
        for record in reader:
            # A quoted value may span lines: a record starts on the line after the last one.
            line, last_line = last_line + 1, reader.line_num
            rows_read += 1
            values, problems, repairs = _check_record(record, positions, len(header))
            cid = _well_formed_id(record, positions["customerID"])
            if cid is not None and not problems and cid in first_line:
                duplicate = f"customerID {cid} appears again; line {first_line[cid]} has it"
                problems = [_Problem("customerID", "customer_id.duplicate", duplicate)]
            if problems and on_bad_row == "fail":
                raise ConfigError(
                    f"{source} line {line}: {'; '.join(p.text for p in problems)}. "
                    "on_bad_row='fail' stops at the first bad row: fix the row, or load with "
                    "on_bad_row='skip' to skip it and have it reported"
                )
            action: Literal["repaired", "skipped"] = "skipped" if problems else "repaired"
            for p in problems or repairs:
                issues.append(RowIssue(line, cid, p.column, p.text, action, p.rule))
            if not problems:
                assert cid is not None  # a row without problems has a well-formed id
                customers.append(Customer.model_validate(values))
                first_line[cid] = line
    except csv.Error as exc:
        raise ConfigError(
            f"{source} line {reader.line_num}: the CSV cannot be parsed ({exc}); "
            f"{_EXPECTED_FILE}, plain comma-separated text with one customer per line"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    return LoadResult(tuple(customers), tuple(issues), source, rows_read, digest)


def _well_formed_id(record: Sequence[str], index: int) -> str | None:
    """The row's customerID, for its issues, if there is one and it is well formed."""
    text = record[index].strip() if index < len(record) else ""
    return text if _ID.fullmatch(text) else None


def _read_bytes(source: Path, max_bytes: int) -> bytes:
    try:
        size = source.stat().st_size
        if size > max_bytes:
            raise ConfigError(
                f"{source} is {size:,} bytes, over the limit of {max_bytes:,}; "
                f"{_EXPECTED_FILE} (under 1 MB), or pass a larger max_bytes if this file is meant"
            )
        data = source.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"no file at {source}; {_EXPECTED_FILE}: check the path") from exc
    except OSError as exc:
        raise ConfigError(
            f"{source} cannot be read ({exc.strerror or exc}); {_EXPECTED_FILE}: check that "
            "the path names a readable file"
        ) from exc
    if b"\x00" in data:
        raise ConfigError(f"{source} holds binary data (NUL bytes), not text; {_EXPECTED_FILE}")
    if not data.strip():
        raise ConfigError(
            f"{source} is empty; {_EXPECTED_FILE}, whose first line names its 21 columns: {_HEADER}"
        )
    return data


def _decode(source: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # -sig: a byte-order mark must not rename column 1
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x}); "
            f"{_EXPECTED_FILE}, which is plain ASCII"
        ) from exc


def _read_header(source: Path, header: list[str]) -> tuple[dict[str, int], list[RowIssue]]:
    """Where each of the 21 columns is, and an issue for each column beyond them."""
    positions: dict[str, int] = {}
    for index, name in enumerate(header):
        if name in positions:
            raise ConfigError(
                f"{source} line 1: column {_show(name)} appears twice in the header (columns "
                f"{positions[name] + 1} and {index + 1}); each column must appear once"
            )
        positions[name] = index
    missing = [column for column in TELCO_COLUMNS if column not in positions]
    if missing:
        raise ConfigError(
            f"{source} line 1: the header lacks {len(missing)} of the 21 Telco customer churn "
            f"columns: {', '.join(missing)}. Expected a first line naming all 21, in any "
            f"order: {_HEADER}; found: {_show(','.join(header))}"
        )
    extra = "is not one of the 21 Telco customer churn columns; its values are ignored"
    issues = [
        RowIssue(1, None, name, f"column {_show(name)} {extra}", "skipped", "header.extra_column")
        for name in header
        if name not in _FIELD_OF
    ]
    return {column: positions[column] for column in TELCO_COLUMNS}, issues


def _check_record(
    record: Sequence[str], positions: Mapping[str, int], width: int
) -> tuple[dict[str, object], list[_Problem], list[_Problem]]:
    """The Customer fields of one record, the problems that make it unusable, and its repairs."""
    if len(record) != width:
        rule, what = (
            ("row.field_count", f"the row has {len(record)} fields")
            if record
            else ("row.blank_line", "the line is blank")
        )
        expected = f"expected {width} fields, one per header column"
        return {}, [_Problem(None, rule, f"{what}; {expected}")], []
    raw = {column: record[index].strip() for column, index in positions.items()}
    values: dict[str, object] = {}
    problems: list[_Problem] = []
    for column, text in raw.items():
        if column == "TotalCharges" and not text:
            continue  # the repair rules below need tenure and MonthlyCharges first
        try:
            values[_FIELD_OF[column]] = _PARSERS[column](text)
        except _BadValue as bad:
            text = f"{column} {_show(text)} {bad.what}; expected {bad.expected}"
            problems.append(_Problem(column, bad.rule, text))
    problems.extend(_contradictions(raw, values))
    repairs: list[_Problem] = []
    tenure, monthly = values.get("tenure"), values.get("monthly_charges")
    if not raw["TotalCharges"] and isinstance(tenure, int) and isinstance(monthly, Decimal):
        blank = f"TotalCharges is blank and tenure is {tenure}"
        if tenure == 0:
            values["total_charges"] = Decimal("0.00")
            text = f"{blank} (not billed yet); repaired to 0.00"
            repairs.append(_Problem("TotalCharges", "total_charges.blank_new_customer", text))
        else:
            values["total_charges"] = estimate = (tenure * monthly).quantize(_CENT)
            text = (
                f"{blank}; repaired to tenure x MonthlyCharges = {tenure} x {monthly} = {estimate}"
            )
            repairs.append(_Problem("TotalCharges", "total_charges.blank_estimated", text))
    return values, problems, repairs


def _customer_id(text: str) -> str:
    if not _ID.fullmatch(text):
        shape = "4 digits, a hyphen and 5 capital letters, like 7590-VHVEG"
        raise _BadValue("customer_id.format", "is malformed", shape)
    return text


def _tenure(text: str) -> int:
    months = f"a whole number of months from 0 to {_MAX_TENURE}"
    if not _INTEGER.fullmatch(text):
        raise _BadValue("tenure.not_integer", "is not a whole number", months)
    if int(text) > _MAX_TENURE:
        raise _BadValue("tenure.out_of_range", "is out of range", months)
    return int(text)


def _amount(text: str, *, limit: Decimal | None = None) -> Decimal:
    if not _AMOUNT.fullmatch(text):
        raise _BadValue("charges.not_numeric", "is not a number", "dollars and cents like 29.85")
    amount = Decimal(text)
    if amount < 0:
        raise _BadValue("charges.negative", "is negative", "an amount of 0 or more")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise _BadValue("charges.precision", "has more than 2 decimal places", "whole cents")
    if limit is not None and amount > limit:
        raise _BadValue("charges.out_of_range", "is too large", f"at most {limit}")
    return amount.copy_abs().quantize(_CENT)  # copy_abs: "-0" is zero, not negative zero


def _known(values: Mapping[str, object]) -> Callable[[str], object]:
    shown = [repr(value) for value in values]
    expected = " or ".join(shown) if len(shown) == 2 else "one of " + ", ".join(shown)

    def parse(text: str) -> object:
        if text not in values:
            raise _BadValue("value.unknown", "is not a known value", expected)
        return values[text]

    return parse


# How each column's trimmed text becomes a field value; each raises _BadValue.
_PARSERS: Mapping[str, Callable[[str], object]] = {
    "customerID": _customer_id,
    "tenure": _tenure,
    "MonthlyCharges": functools.partial(_amount, limit=_MAX_MONTHLY),
    "TotalCharges": _amount,
    **{column: _known(flag) for column, flag in _FLAGS.items()},
    **{column: _known({v: v for v in values}) for column, values in _CHOICES.items()},
}


def _contradictions(raw: Mapping[str, str], values: Mapping[str, object]) -> list[_Problem]:
    """Services that contradict each other: lines without a phone, extras without internet."""
    problems: list[_Problem] = []
    for column, cause, marker, rule in _DEPENDS_ON:
        if _FIELD_OF[column] not in values or _FIELD_OF[cause] not in values:
            continue  # already reported as a bad value
        lacking = raw[cause] == "No"
        if lacking != (raw[column] == marker):
            expected = repr(marker) if lacking else "'Yes' or 'No'"
            text = (
                f"{column} {raw[column]!r} contradicts {cause} {raw[cause]!r}; expected {expected}"
            )
            problems.append(_Problem(column, rule, text))
    return problems


# Synthetic cohorts. Shares and rates were measured on the published file and rounded. Monthly
# charges follow a price per service plus a little noise, which fits the published ones to
# within about a dollar; churn depends on the contract only.
_CONTRACT_SHARES = (0.550, 0.209, 0.241)  # in CONTRACTS order
_CHURN_RATE = {"Month-to-month": 0.427, "One year": 0.113, "Two year": 0.028}
_NEW_CUSTOMER_SHARE = 11 / 7043  # tenure 0, not billed yet, never churned
# tenure = 1 + 71 * u**shape with u uniform: mean about 19, 42 and 54 months.
_TENURE_SHAPE = {"Month-to-month": 2.8, "One year": 0.7, "Two year": 0.33}
_INTERNET_SERVICES = ("DSL", "Fiber optic", "No")
_INTERNET = {  # shares by contract, in _INTERNET_SERVICES order
    "Month-to-month": (0.316, 0.549, 0.135),
    "One year": (0.387, 0.366, 0.247),
    "Two year": (0.371, 0.253, 0.376),
}
_PAYMENT_METHODS = (
    "Electronic check",
    "Mailed check",
    "Bank transfer (automatic)",
    "Credit card (automatic)",
)
_PAYMENT = {  # shares by contract, in _PAYMENT_METHODS order
    "Month-to-month": (0.477, 0.231, 0.152, 0.140),
    "One year": (0.236, 0.229, 0.265, 0.270),
    "Two year": (0.099, 0.225, 0.333, 0.343),
}
_PAPERLESS = {"Month-to-month": 0.667, "One year": 0.543, "Two year": 0.463}
_PHONE_WITH_DSL = 0.718  # fibre and no-internet customers all have a phone
_MULTIPLE_LINES = {"DSL": 0.397, "Fiber optic": 0.626, "No": 0.224}  # given a phone
_EXTRA_TAKE_UP = {  # in _EXTRAS order
    "DSL": (0.487, 0.449, 0.440, 0.487, 0.395, 0.405),
    "Fiber optic": (0.271, 0.434, 0.438, 0.280, 0.565, 0.566),
}
_PRICE_PHONE, _PRICE_EXTRA_LINE = 20.0, 5.0
_PRICE_INTERNET = {"DSL": 25.0, "Fiber optic": 50.0, "No": 0.0}
_PRICE_EXTRA = (5.0, 5.0, 5.0, 5.0, 10.0, 10.0)  # in _EXTRAS order
_MONTHLY_RANGE = (18.25, 118.75)
_MAX_COHORT = 1_000_000


def synthetic_cohort(n: int, *, seed: int) -> tuple[Customer, ...]:
    """``n`` realistic customers with unique ids; the same seed gives the same cohort."""
    if not 0 <= n <= _MAX_COHORT:
        raise ConfigError(f"a cohort of {n} customers was asked for; expected 0 to {_MAX_COHORT:,}")
    rng = random.Random(seed)
    seen: set[str] = set()
    cohort: list[Customer] = []
    while len(cohort) < n:
        letters = "".join(rng.choice(string.ascii_uppercase) for _ in range(5))
        customer_id = f"{rng.randrange(10_000):04d}-{letters}"
        if customer_id not in seen:
            seen.add(customer_id)
            cohort.append(_synthetic_customer(rng, customer_id))
    return tuple(cohort)


def _pick(rng: random.Random, values: Sequence[str], shares: Sequence[float]) -> str:
    u = rng.random() * sum(shares)
    for value, share in zip(values[:-1], shares, strict=False):
        u -= share
        if u < 0:
            return value
    return values[-1]  # also where rounding leaves u a hair above the last boundary


def _synthetic_customer(rng: random.Random, customer_id: str) -> Customer:
    partner = rng.random() < 0.483
    contract = _pick(rng, CONTRACTS, _CONTRACT_SHARES)
    tenure = 0
    if rng.random() >= _NEW_CUSTOMER_SHARE:
        tenure = 1 + round(71 * rng.random() ** _TENURE_SHAPE[contract])
    internet = _pick(rng, _INTERNET_SERVICES, _INTERNET[contract])
    phone = internet != "DSL" or rng.random() < _PHONE_WITH_DSL
    lines = "No phone service"
    if phone:
        lines = "Yes" if rng.random() < _MULTIPLE_LINES[internet] else "No"
    extras = ["No internet service"] * len(_EXTRAS)
    if internet != "No":
        extras = ["Yes" if rng.random() < p else "No" for p in _EXTRA_TAKE_UP[internet]]
    price = _PRICE_PHONE * phone + _PRICE_EXTRA_LINE * (lines == "Yes") + rng.gauss(0.0, 1.0)
    price += _PRICE_INTERNET[internet]
    price += sum(cost for cost, taken in zip(_PRICE_EXTRA, extras, strict=True) if taken == "Yes")
    low, high = _MONTHLY_RANGE
    # Published charges are whole multiples of 5 cents.
    monthly = (Decimal(round(min(max(price, low), high) * 20)) / 20).quantize(_CENT)
    drift = Decimal(min(max(rng.gauss(1.0, 0.05), 0.8), 1.2)) if tenure > 1 else Decimal(1)
    return Customer.model_validate(
        {
            "customer_id": customer_id,
            "gender": "Male" if rng.random() < 0.505 else "Female",
            "senior_citizen": rng.random() < 0.162,
            "partner": partner,
            "dependents": rng.random() < (0.514 if partner else 0.099),
            "tenure": tenure,
            "phone_service": phone,
            "multiple_lines": lines,
            "internet_service": internet,
            **{_FIELD_OF[column]: value for column, value in zip(_EXTRAS, extras, strict=True)},
            "contract": contract,
            "paperless_billing": rng.random() < _PAPERLESS[contract],
            "payment_method": _pick(rng, _PAYMENT_METHODS, _PAYMENT[contract]),
            "monthly_charges": monthly,
            "total_charges": (tenure * monthly * drift).quantize(_CENT),
            "churn": tenure > 0 and rng.random() < _CHURN_RATE[contract],
        }
    )


class CohortSummary(TypedDict):
    """What ``describe`` reports. Rates and shares are fractions (0.2654, not 26.54)."""

    count: int
    churned: int
    churn_rate: float
    contract_counts: dict[str, int]
    contract_shares: dict[str, float]
    churn_rate_by_contract: dict[str, float]
    mean_monthly_charges: float
    mean_tenure: float
    new_customers: int


def describe(customers: Iterable[Customer]) -> CohortSummary:
    """Size, churn, contract mix, mean charge and tenure of a cohort (zeros for an empty one)."""
    people = tuple(customers)
    count = len(people)
    by_contract = {c: [p for p in people if p.contract == c] for c in CONTRACTS}

    def ratio(part: float, whole: int) -> float:
        return part / whole if whole else 0.0

    churned = sum(p.churn for p in people)
    return CohortSummary(
        count=count,
        churned=churned,
        churn_rate=ratio(churned, count),
        contract_counts={c: len(group) for c, group in by_contract.items()},
        contract_shares={c: ratio(len(group), count) for c, group in by_contract.items()},
        churn_rate_by_contract={
            c: ratio(sum(p.churn for p in group), len(group)) for c, group in by_contract.items()
        },
        mean_monthly_charges=ratio(float(sum(p.monthly_charges for p in people)), count),
        mean_tenure=ratio(sum(p.tenure for p in people), count),
        new_customers=sum(p.tenure == 0 for p in people),
    )
