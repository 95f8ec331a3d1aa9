"""The renewal workload's data: the published Telco churn CSV, hostile CSVs, synthetic cohorts."""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from seamline.errors import ConfigError
from seamline.workloads.renewal._customer import Customer
from seamline.workloads.renewal._data import (
    TELCO_COLUMNS,
    LoadResult,
    RowIssue,
    describe,
    load_customers,
    synthetic_cohort,
)

REAL_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "telco-customer-churn.csv"
REAL_SHA256 = "88be4b93fbe0cc83421af1c503794c97c342eca914c1576db7c276e61d61358a"
# The 11 customers with tenure 0 and TotalCharges " " (shared/data/README.md).
BLANK_TOTAL_IDS = {
    "4472-LVYGI",
    "3115-CZMZD",
    "5709-LVOEQ",
    "4367-NUYAO",
    "1371-DWPAZ",
    "7644-OMVMY",
    "3213-VVOLG",
    "2520-SGTTA",
    "2923-ARZLG",
    "4075-WKNIU",
    "2775-SEFEE",
}

# A made-up customer in the file's format; each hostile file changes one thing about it.
GOOD_LINE = (
    "0001-AAAAA,Female,0,Yes,No,12,Yes,No,DSL,Yes,No,No,No,No,No,One year,Yes,Mailed check,"
    "29.85,358.20,No"
)
GOOD = dict(zip(TELCO_COLUMNS, GOOD_LINE.split(","), strict=True))


def _row(**changes: str) -> dict[str, str]:
    return {**GOOD, **changes}


def _write(tmp_path: Path, *rows: dict[str, str], header: tuple[str, ...] = TELCO_COLUMNS) -> Path:
    """A CSV with CRLF line endings, like the published file."""
    lines = [",".join(header), *(",".join(row[c] for c in header) for row in rows)]
    return _write_lines(tmp_path, lines)


def _write_lines(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "customers.csv"
    path.write_bytes("".join(line + "\r\n" for line in lines).encode())
    return path


def _skipped(line: int, column: str | None, problem: str, rule: str) -> RowIssue:
    """The issue expected for a skipped row of the template customer."""
    return RowIssue(line, "0001-AAAAA", column, problem, "skipped", rule)


def _load_one_issue(tmp_path: Path, row: dict[str, str]) -> RowIssue:
    result = load_customers(_write(tmp_path, row))
    assert result.customers == ()
    assert len(result.issues) == 1
    return result.issues[0]


# The published file.


@pytest.fixture(scope="module")
def real() -> LoadResult:
    """The published file, loaded once; skipped where it is absent, except in CI."""
    if not REAL_FILE.is_file():
        message = f"the published Telco churn CSV is not at {REAL_FILE}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI requires it)")
        pytest.skip(message)
    return load_customers(REAL_FILE)


def test_real_file_yields_all_7043_customers(real: LoadResult) -> None:
    """Every row of the published file (checked by its hash) becomes a customer; 1,869 churned."""
    assert real.sha256 == REAL_SHA256
    assert real.rows_read == 7043
    assert len(real.customers) == 7043
    assert len({c.customer_id for c in real.customers}) == 7043
    assert sum(c.churn for c in real.customers) == 1869


def test_real_file_repairs_exactly_the_11_blank_totals(real: LoadResult) -> None:
    """The only issues are the 11 blank TotalCharges, repaired to 0.00 by the new-customer rule."""
    assert len(real.issues) == 11
    assert {i.customer_id for i in real.issues} == BLANK_TOTAL_IDS
    assert {(i.column, i.action, i.rule) for i in real.issues} == {
        ("TotalCharges", "repaired", "total_charges.blank_new_customer")
    }
    repaired = [c for c in real.customers if c.customer_id in BLANK_TOTAL_IDS]
    assert {(c.tenure, c.total_charges, c.churn) for c in repaired} == {(0, Decimal("0.00"), False)}
    assert sum(c.tenure == 0 for c in real.customers) == 11


def test_real_file_issue_lines_point_at_the_rows(real: LoadResult) -> None:
    """An issue's line is the physical line in the file, so an editor can jump to it."""
    lines = REAL_FILE.read_bytes().split(b"\r\n")
    for issue in real.issues:
        row = lines[issue.line - 1].decode()
        assert row.startswith(f"{issue.customer_id},")
        assert row.split(",")[19] == " "


def test_real_file_contract_mix_and_churn_match_the_readme(real: LoadResult) -> None:
    """Contract counts and churn by contract are exactly the README's."""
    summary = describe(real.customers)
    assert summary["contract_counts"] == {
        "Month-to-month": 3875,
        "One year": 1473,
        "Two year": 1695,
    }
    churned = Counter(c.contract for c in real.customers if c.churn)
    assert churned == {"Month-to-month": 1655, "One year": 166, "Two year": 48}
    assert round(summary["churn_rate"], 4) == 0.2654
    assert round(summary["mean_monthly_charges"], 2) == 64.76
    assert summary["new_customers"] == 11


def test_real_file_values_are_typed(real: LoadResult) -> None:
    """Flags become bools, charges Decimals with cents, SeniorCitizen 0/1 a bool."""
    first = real.customers[0]
    assert first.customer_id == "7590-VHVEG"
    assert (first.senior_citizen, first.partner, first.phone_service) == (False, True, False)
    assert first.multiple_lines == "No phone service"
    assert first.monthly_charges == Decimal("29.85")
    assert sum(c.senior_citizen for c in real.customers) == 1142
    assert all(c.monthly_charges.as_tuple().exponent == -2 for c in real.customers)


def test_real_file_loads_well_under_a_second() -> None:
    """Loading all 7,043 rows is fast (generous bound for a loaded CI machine)."""
    if not REAL_FILE.is_file():
        pytest.skip(f"the published Telco churn CSV is not at {REAL_FILE}")
    started = time.perf_counter()
    load_customers(REAL_FILE)
    assert time.perf_counter() - started < 2.0


# Whole-file errors.


def test_missing_column_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """A header without some of the 21 columns names them and shows the expected header."""
    header = tuple(c for c in TELCO_COLUMNS if c not in ("TotalCharges", "Churn"))
    path = _write(tmp_path, GOOD, header=header)
    with pytest.raises(ConfigError, match="lacks 2 of the 21") as caught:
        load_customers(path)
    message = str(caught.value)
    assert "columns: TotalCharges, Churn." in message
    assert ",".join(TELCO_COLUMNS) in message
    assert str(path) in message


def test_empty_file_is_a_config_error(tmp_path: Path) -> None:
    """An empty (or whitespace-only) file says what the file should start with."""
    path = tmp_path / "empty.csv"
    for content in (b"", b"\r\n  \r\n"):
        path.write_bytes(content)
        with pytest.raises(ConfigError, match="is empty; expected the IBM Telco") as caught:
            load_customers(path)
        assert "customerID,gender,SeniorCitizen" in str(caught.value)


def test_binary_file_is_a_config_error(tmp_path: Path) -> None:
    """Binary garbage (NUL bytes) is refused before any parsing."""
    path = tmp_path / "garbage.csv"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match=r"binary data \(NUL bytes\), not text"):
        load_customers(path)


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    """Text in another encoding is refused with the offending byte."""
    path = tmp_path / "latin1.csv"
    path.write_bytes(",".join(TELCO_COLUMNS).encode() + b"\r\n0001-AAAAA,F\xe9male\r\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte \d+ is 0xe9\)"):
        load_customers(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A path with no file says so."""
    with pytest.raises(ConfigError, match=r"no file at .*nope\.csv; expected the IBM Telco"):
        load_customers(tmp_path / "nope.csv")


def test_directory_is_a_config_error(tmp_path: Path) -> None:
    """A path that cannot be read as a file says so."""
    with pytest.raises(ConfigError, match="cannot be read"):
        load_customers(tmp_path)


def test_file_over_max_bytes_is_a_config_error(tmp_path: Path) -> None:
    """The size bound is checked before the file is read."""
    path = _write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=r"over the limit of 100; .*larger max_bytes"):
        load_customers(path, max_bytes=100)


def test_duplicate_header_column_is_a_config_error(tmp_path: Path) -> None:
    """A column named twice is ambiguous, so the whole file is refused."""
    path = _write_lines(tmp_path, [",".join((*TELCO_COLUMNS, "Churn"))])
    with pytest.raises(ConfigError, match=r"column 'Churn' appears twice .*\(columns 21 and 22\)"):
        load_customers(path)


def test_unknown_on_bad_row_is_a_config_error(tmp_path: Path) -> None:
    """on_bad_row accepts only 'skip' or 'fail'."""
    with pytest.raises(ConfigError, match="on_bad_row is 'ignore'; expected 'skip' or 'fail'"):
        load_customers(_write(tmp_path, GOOD), on_bad_row="ignore")  # type: ignore[arg-type]


# Row issues.


def test_good_row_loads_without_issues(tmp_path: Path) -> None:
    """The template row is valid: one customer, no issues."""
    result = load_customers(_write(tmp_path, GOOD))
    assert result.issues == ()
    assert result.rows_read == 1
    [customer] = result.customers
    assert customer.total_charges == Decimal("358.20")
    assert customer.contract == "One year"


def test_duplicate_id_skips_the_later_row(tmp_path: Path) -> None:
    """A second row with a loaded customerID is skipped, naming the line of the first."""
    result = load_customers(_write(tmp_path, GOOD, _row(gender="Male")))
    assert [c.gender for c in result.customers] == ["Female"]
    duplicate = "customerID 0001-AAAAA appears again; line 2 has it"
    assert result.issues == (_skipped(3, "customerID", duplicate, "customer_id.duplicate"),)


def test_non_numeric_charge_is_skipped(tmp_path: Path) -> None:
    """A charge that is not a number is reported with the value and the expected form."""
    issue = _load_one_issue(tmp_path, _row(MonthlyCharges="$29.85"))
    problem = "MonthlyCharges '$29.85' is not a number; expected dollars and cents like 29.85"
    assert issue == _skipped(2, "MonthlyCharges", problem, "charges.not_numeric")


def test_negative_charge_is_skipped(tmp_path: Path) -> None:
    """A negative charge is reported as negative, not as unparseable."""
    issue = _load_one_issue(tmp_path, _row(TotalCharges="-358.20"))
    problem = "TotalCharges '-358.20' is negative; expected an amount of 0 or more"
    assert issue == _skipped(2, "TotalCharges", problem, "charges.negative")


def test_unknown_category_is_skipped(tmp_path: Path) -> None:
    """A categorical value outside the model's Literal lists the values allowed."""
    issue = _load_one_issue(tmp_path, _row(Contract="Three year"))
    problem = (
        "Contract 'Three year' is not a known value; expected one of 'Month-to-month', "
        "'One year', 'Two year'"
    )
    assert issue == _skipped(2, "Contract", problem, "value.unknown")


def test_wrong_field_count_is_skipped(tmp_path: Path) -> None:
    """A row with too few fields is skipped as a whole, with its id when that is readable."""
    short = GOOD_LINE.replace("0001-AAAAA", "0002-BBBBB").rsplit(",", 1)[0]
    result = load_customers(_write_lines(tmp_path, [",".join(TELCO_COLUMNS), GOOD_LINE, short]))
    assert [c.customer_id for c in result.customers] == ["0001-AAAAA"]
    problem = "the row has 20 fields; expected 21 fields, one per header column"
    assert result.issues == (
        RowIssue(3, "0002-BBBBB", None, problem, "skipped", "row.field_count"),
    )


def test_blank_line_is_skipped(tmp_path: Path) -> None:
    """A blank line between rows is reported, and the rows around it still load."""
    lines = [",".join(TELCO_COLUMNS), "", GOOD_LINE]
    result = load_customers(_write_lines(tmp_path, lines))
    assert len(result.customers) == 1
    assert result.rows_read == 2
    problem = "the line is blank; expected 21 fields, one per header column"
    assert result.issues == (RowIssue(2, None, None, problem, "skipped", "row.blank_line"),)


def test_lines_count_physical_lines_across_quoted_newlines(tmp_path: Path) -> None:
    """A quoted value spanning two lines shifts later issues to their true physical line."""
    spanning = GOOD_LINE.replace("Mailed check", '"Mailed\ncheck"')
    bad = GOOD_LINE.replace("0001-AAAAA", "0002-BBBBB").replace("One year", "Forever")
    result = load_customers(_write_lines(tmp_path, [",".join(TELCO_COLUMNS), spanning, bad]))
    assert [(i.line, i.column) for i in result.issues] == [(2, "PaymentMethod"), (4, "Contract")]
    assert result.issues[0].problem.startswith("PaymentMethod 'Mailed\\ncheck' is not a known")


def test_extra_column_is_reported_once_and_ignored(tmp_path: Path) -> None:
    """An unknown column is one header issue; the rows still load with the right values."""
    header = ("Region", *TELCO_COLUMNS)
    second = _row(customerID="0002-BBBBB", Region="South")
    result = load_customers(_write(tmp_path, _row(Region="North"), second, header=header))
    assert [c.customer_id for c in result.customers] == ["0001-AAAAA", "0002-BBBBB"]
    assert result.customers[0] == load_customers(_write(tmp_path, GOOD)).customers[0]
    problem = "column 'Region' is not one of the 21 Telco customer churn columns; its values are"
    assert result.issues == (
        RowIssue(1, None, "Region", problem + " ignored", "skipped", "header.extra_column"),
    )


@pytest.mark.parametrize(
    ("changes", "column", "rule", "problem"),
    [
        (
            {"customerID": "1234-abcde"},
            "customerID",
            "customer_id.format",
            "customerID '1234-abcde' is malformed; expected 4 digits, a hyphen and 5 capital "
            "letters, like 7590-VHVEG",
        ),
        (
            {"SeniorCitizen": "Yes"},
            "SeniorCitizen",
            "value.unknown",
            "SeniorCitizen 'Yes' is not a known value; expected '1' or '0'",
        ),
        (
            {"Partner": "yes"},
            "Partner",
            "value.unknown",
            "Partner 'yes' is not a known value; expected 'Yes' or 'No'",
        ),
        (
            {"tenure": "3.5"},
            "tenure",
            "tenure.not_integer",
            "tenure '3.5' is not a whole number; expected a whole number of months from 0 to 120",
        ),
        (
            {"tenure": "500"},
            "tenure",
            "tenure.out_of_range",
            "tenure '500' is out of range; expected a whole number of months from 0 to 120",
        ),
        (
            {"MonthlyCharges": "29.855"},
            "MonthlyCharges",
            "charges.precision",
            "MonthlyCharges '29.855' has more than 2 decimal places; expected whole cents",
        ),
        (
            {"MonthlyCharges": "1e3"},
            "MonthlyCharges",
            "charges.not_numeric",
            "MonthlyCharges '1e3' is not a number; expected dollars and cents like 29.85",
        ),
        (
            {"MonthlyCharges": "NaN"},
            "MonthlyCharges",
            "charges.not_numeric",
            "MonthlyCharges 'NaN' is not a number; expected dollars and cents like 29.85",
        ),
        (
            {"MonthlyCharges": "5000"},
            "MonthlyCharges",
            "charges.out_of_range",
            "MonthlyCharges '5000' is too large; expected at most 1000",
        ),
        (
            {"MonthlyCharges": ""},
            "MonthlyCharges",
            "charges.not_numeric",
            "MonthlyCharges '' is not a number; expected dollars and cents like 29.85",
        ),
        (
            {"gender": "x" * 100},
            "gender",
            "value.unknown",
            f"gender {'x' * 40!r}... (100 characters) is not a known value; expected 'Male' or "
            "'Female'",
        ),
        (
            {"PhoneService": "No"},
            "MultipleLines",
            "consistency.phone",
            "MultipleLines 'No' contradicts PhoneService 'No'; expected 'No phone service'",
        ),
        (
            {"MultipleLines": "No phone service"},
            "MultipleLines",
            "consistency.phone",
            "MultipleLines 'No phone service' contradicts PhoneService 'Yes'; expected 'Yes' or "
            "'No'",
        ),
        (
            {"StreamingTV": "No internet service"},
            "StreamingTV",
            "consistency.internet",
            "StreamingTV 'No internet service' contradicts InternetService 'DSL'; expected 'Yes' "
            "or 'No'",
        ),
    ],
)
def test_bad_value_is_skipped_with_the_rule_broken(
    tmp_path: Path, changes: dict[str, str], column: str, rule: str, problem: str
) -> None:
    """Each kind of bad value skips the row with its column, value (truncated) and expectation."""
    customer_id = None if rule == "customer_id.format" else "0001-AAAAA"
    issue = _load_one_issue(tmp_path, _row(**changes))
    assert issue == RowIssue(2, customer_id, column, problem, "skipped", rule)


def test_no_internet_needs_every_extra_marked(tmp_path: Path) -> None:
    """InternetService 'No' with 'Yes'/'No' extras is one issue per contradicting extra."""
    result = load_customers(
        _write(tmp_path, _row(InternetService="No", OnlineSecurity="No internet service"))
    )
    assert result.customers == ()
    assert [i.column for i in result.issues] == [
        "OnlineBackup",
        "DeviceProtection",
        "TechSupport",
        "StreamingTV",
        "StreamingMovies",
    ]
    assert {i.rule for i in result.issues} == {"consistency.internet"}
    assert result.issues[0].problem == (
        "OnlineBackup 'No' contradicts InternetService 'No'; expected 'No internet service'"
    )


def test_every_bad_field_of_a_row_is_reported(tmp_path: Path) -> None:
    """A row with several bad values gets one issue per value, so one pass fixes the file."""
    result = load_customers(_write(tmp_path, _row(gender="?", tenure="-1", Churn="maybe")))
    assert [(i.line, i.column) for i in result.issues] == [
        (2, "gender"),
        (2, "tenure"),
        (2, "Churn"),
    ]


def test_bad_value_is_not_also_a_contradiction(tmp_path: Path) -> None:
    """A column that failed to parse is not reported again by the consistency rules."""
    result = load_customers(_write(tmp_path, _row(PhoneService="maybe", InternetService="Cable")))
    assert [(i.column, i.rule) for i in result.issues] == [
        ("PhoneService", "value.unknown"),
        ("InternetService", "value.unknown"),
    ]


def test_oversized_field_is_a_config_error(tmp_path: Path) -> None:
    """A field beyond the csv module's limit (128 KiB) stops the load with its line number."""
    path = _write(tmp_path, GOOD, _row(customerID="0002-BBBBB", gender="x" * 200_000))
    with pytest.raises(ConfigError, match=r"line 3: the CSV cannot be parsed \(field larger"):
        load_customers(path)


def test_blank_total_with_tenure_is_estimated(tmp_path: Path) -> None:
    """A blank TotalCharges on a billed customer is repaired to tenure x MonthlyCharges."""
    result = load_customers(_write(tmp_path, _row(TotalCharges=" ")))
    assert result.customers[0].total_charges == Decimal("358.20")
    [issue] = result.issues
    assert (issue.line, issue.column, issue.action) == (2, "TotalCharges", "repaired")
    assert issue.rule == "total_charges.blank_estimated"
    assert issue.problem == (
        "TotalCharges is blank and tenure is 12; repaired to tenure x MonthlyCharges = "
        "12 x 29.85 = 358.20"
    )


def test_blank_total_of_a_new_customer_is_zero(tmp_path: Path) -> None:
    """A blank TotalCharges with tenure 0 (as in the published file) is repaired to 0.00."""
    result = load_customers(_write(tmp_path, _row(tenure="0", TotalCharges=" ")))
    assert result.customers[0].total_charges == Decimal("0.00")
    [issue] = result.issues
    assert (issue.line, issue.column, issue.action) == (2, "TotalCharges", "repaired")
    assert issue.rule == "total_charges.blank_new_customer"
    assert (
        issue.problem == "TotalCharges is blank and tenure is 0 (not billed yet); repaired to 0.00"
    )


def test_repairs_are_not_reported_on_a_skipped_row(tmp_path: Path) -> None:
    """A row skipped for a bad value reports only why it was skipped."""
    result = load_customers(_write(tmp_path, _row(tenure="0", TotalCharges=" ", gender="?")))
    assert [(i.rule, i.action) for i in result.issues] == [("value.unknown", "skipped")]


def test_whitespace_around_values_is_trimmed_silently(tmp_path: Path) -> None:
    """Spaces around values and header names are trimmed without an issue."""
    header = tuple(f" {c} " for c in TELCO_COLUMNS)
    path = _write(tmp_path, {f" {c} ": f"  {v}\t" for c, v in GOOD.items()}, header=header)
    result = load_customers(path)
    assert result.issues == ()
    assert result.customers == load_customers(_write(tmp_path, GOOD)).customers


def test_columns_in_any_order_and_quoted_values_load(tmp_path: Path) -> None:
    """Columns are found by name, and quoted values (with commas) are read by the csv module."""
    header = tuple(reversed(TELCO_COLUMNS))
    lines = [",".join(header), ",".join(f'"{GOOD[c]}"' for c in header)]
    result = load_customers(_write_lines(tmp_path, lines))
    assert result.customers == load_customers(_write(tmp_path, GOOD)).customers


def test_lf_endings_and_byte_order_mark_load(tmp_path: Path) -> None:
    """LF line endings and a UTF-8 byte-order mark do not change what loads."""
    path = tmp_path / "lf.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{','.join(GOOD)}\n{','.join(GOOD.values())}\n".encode())
    result = load_customers(path)
    assert result.issues == ()
    assert [c.customer_id for c in result.customers] == ["0001-AAAAA"]


def test_header_only_file_yields_no_customers(tmp_path: Path) -> None:
    """A file with the header and no rows is valid and empty."""
    result = load_customers(_write(tmp_path))
    assert (result.customers, result.issues, result.rows_read) == ((), (), 0)


def test_rows_read_counts_loaded_and_skipped_rows(tmp_path: Path) -> None:
    """rows_read = customers loaded + rows skipped, so nothing goes unaccounted."""
    rows = [_row(customerID=f"000{i}-AAAAA") for i in range(1, 6)]
    rows[1]["Contract"] = "Forever"
    rows[3]["customerID"] = rows[2]["customerID"]
    result = load_customers(_write(tmp_path, *rows))
    skipped = {i.line for i in result.issues if i.action == "skipped"}
    assert skipped == {3, 5}
    assert result.rows_read == len(result.customers) + len(skipped) == 5


def test_fail_mode_raises_at_the_first_bad_row(tmp_path: Path) -> None:
    """on_bad_row='fail' raises a ConfigError naming the line and problem of the first bad row."""
    path = _write(tmp_path, GOOD, _row(customerID="0002-BBBBB", tenure="many"), _row(gender="?"))
    with pytest.raises(ConfigError) as caught:
        load_customers(path, on_bad_row="fail")
    message = str(caught.value)
    assert message.startswith(f"{path} line 3: tenure 'many' is not a whole number")
    assert "on_bad_row='skip'" in message
    assert "gender" not in message


def test_fail_mode_still_applies_declared_repairs(tmp_path: Path) -> None:
    """A repair is not a bad row: on_bad_row='fail' loads and reports it."""
    result = load_customers(_write(tmp_path, _row(TotalCharges=" ")), on_bad_row="fail")
    assert [i.rule for i in result.issues] == ["total_charges.blank_estimated"]
    assert len(result.customers) == 1


def test_result_records_path_and_hash(tmp_path: Path) -> None:
    """The result names the file and the sha256 of its bytes, to tie a run to its input."""
    path = _write(tmp_path, GOOD)
    result = load_customers(str(path))
    assert result.path == path
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


# Synthetic cohorts.


@pytest.fixture(scope="module")
def cohort() -> tuple[Customer, ...]:
    return synthetic_cohort(5000, seed=7)


def test_same_seed_gives_the_same_cohort() -> None:
    """A cohort is a pure function of (n, seed); a different seed gives a different cohort."""
    assert synthetic_cohort(300, seed=1) == synthetic_cohort(300, seed=1)
    assert synthetic_cohort(300, seed=1) != synthetic_cohort(300, seed=2)
    assert synthetic_cohort(300, seed=1)[:100] == synthetic_cohort(100, seed=1)


def test_cohort_ids_are_unique_and_well_formed(cohort: tuple[Customer, ...]) -> None:
    """Ids follow the published format (4 digits, hyphen, 5 capitals) and never repeat."""
    ids = [c.customer_id for c in cohort]
    assert len(set(ids)) == len(ids) == 5000
    assert all(re.fullmatch(r"[0-9]{4}-[A-Z]{5}", i) for i in ids)


def test_cohort_matches_the_published_distributions(cohort: tuple[Customer, ...]) -> None:
    """Contract mix, churn by contract and mean charge are the published ones, within tolerance."""
    summary = describe(cohort)
    shares = summary["contract_shares"]
    assert shares["Month-to-month"] == pytest.approx(0.550, abs=0.025)
    assert shares["One year"] == pytest.approx(0.209, abs=0.025)
    assert shares["Two year"] == pytest.approx(0.241, abs=0.025)
    rates = summary["churn_rate_by_contract"]
    assert rates["Month-to-month"] == pytest.approx(0.427, abs=0.03)
    assert rates["One year"] == pytest.approx(0.113, abs=0.03)
    assert rates["Two year"] == pytest.approx(0.028, abs=0.015)
    assert summary["churn_rate"] == pytest.approx(0.265, abs=0.02)
    assert summary["mean_monthly_charges"] == pytest.approx(64.76, abs=1.5)
    assert summary["mean_tenure"] == pytest.approx(32.4, abs=2.0)


def test_cohort_service_shares_match_the_published_ones(cohort: tuple[Customer, ...]) -> None:
    """Internet, phone, multiple-line and payment shares are the published ones, within 3 points."""
    n = len(cohort)
    internet = Counter(c.internet_service for c in cohort)
    assert internet["Fiber optic"] / n == pytest.approx(3096 / 7043, abs=0.03)
    assert internet["DSL"] / n == pytest.approx(2421 / 7043, abs=0.03)
    assert internet["No"] / n == pytest.approx(1526 / 7043, abs=0.03)
    assert sum(c.phone_service for c in cohort) / n == pytest.approx(6361 / 7043, abs=0.03)
    assert sum(c.multiple_lines == "Yes" for c in cohort) / n == pytest.approx(
        2971 / 7043, abs=0.03
    )
    assert sum(c.online_security == "Yes" for c in cohort) / n == pytest.approx(
        2019 / 7043, abs=0.03
    )
    payments = Counter(c.payment_method for c in cohort)
    assert payments["Electronic check"] / n == pytest.approx(2365 / 7043, abs=0.03)
    assert sum(c.senior_citizen for c in cohort) / n == pytest.approx(1142 / 7043, abs=0.03)


def test_cohort_services_are_consistent(cohort: tuple[Customer, ...]) -> None:
    """No internet means every extra is 'No internet service'; no phone, 'No phone service'."""
    extras = (
        "online_security",
        "online_backup",
        "device_protection",
        "tech_support",
        "streaming_tv",
        "streaming_movies",
    )
    for c in cohort:
        no_internet = c.internet_service == "No"
        assert all((getattr(c, e) == "No internet service") == no_internet for e in extras)
        assert (c.multiple_lines == "No phone service") == (not c.phone_service)
        assert c.phone_service or c.internet_service == "DSL"


def test_cohort_charges_and_tenure_are_plausible(cohort: tuple[Customer, ...]) -> None:
    """Charges lie in the published range; new customers are unbilled; totals track tenure."""
    assert all(Decimal("18.25") <= c.monthly_charges <= Decimal("118.75") for c in cohort)
    assert all(0 <= c.tenure <= 72 for c in cohort)
    new = [c for c in cohort if c.tenure == 0]
    assert 1 <= len(new) <= 25  # about 11 in 7,043
    assert all(c.total_charges == 0 and not c.churn for c in new)
    for c in cohort:
        if c.tenure > 0:
            assert c.total_charges is not None
            assert 0.8 <= c.total_charges / (c.tenure * c.monthly_charges) <= 1.2


def test_cohort_round_trips_through_the_loader(tmp_path: Path) -> None:
    """A synthetic cohort written in the published format loads back unchanged, without issues."""
    customers = synthetic_cohort(300, seed=3)

    def cell(value: object) -> str:
        if isinstance(value, bool):
            return "Yes" if value else "No"
        return str(value)

    rows = []
    for c in customers:
        row = {col: cell(v) for col, v in zip(TELCO_COLUMNS, c.model_dump().values(), strict=True)}
        row["SeniorCitizen"] = "1" if c.senior_citizen else "0"
        rows.append(row)
    result = load_customers(_write(tmp_path, *rows))
    assert result.issues == ()
    assert result.customers == customers


def test_cohort_size_is_bounded() -> None:
    """n must lie in 0..1,000,000; an empty cohort is allowed."""
    assert synthetic_cohort(0, seed=1) == ()
    with pytest.raises(ConfigError, match=r"cohort of -1 customers .* expected 0 to 1,000,000"):
        synthetic_cohort(-1, seed=1)


def test_describe_an_empty_cohort_is_all_zeros() -> None:
    """describe() of nothing reports zeros rather than dividing by zero."""
    summary = describe([])
    assert summary["count"] == summary["churned"] == 0
    assert summary["churn_rate"] == summary["mean_monthly_charges"] == 0.0
    assert summary["contract_shares"] == {"Month-to-month": 0.0, "One year": 0.0, "Two year": 0.0}
