"""Exchange rates from a CSV file (`investflow rates load FILE.csv`), as the Center's rates events.

    date,currency,cny_per_unit
    2022-04-27,USD,6.4528
    2022-04-27,EUR,6.8126

The whole file is checked first and every problem is named by line and column; nothing is
published unless the file is clean. Each day's rates then go out as one `intake.CENTER.rates`
message — the same path as the Center's own system — so intake validates and records them
and scoring credits whatever was held for them. The idempotency key is the day and a digest
of its rates: loading the same file twice changes nothing, a corrected rate is a new event.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from pydantic import ValidationError

from shared import subjects
from shared.contract import Rates
from shared.contract.inbound import EARLIEST, LATEST
from shared.directory import Directory

COLUMNS = ("date", "currency", "cny_per_unit")
CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_PLACES = 8  # the contract's rate precision


@dataclass(frozen=True)
class Problem:
    line: int
    column: str  # a column name, or "" for the whole line / file
    problem: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.problem}"


@dataclass(frozen=True)
class DayRates:
    rates: Rates
    lines: tuple[int, ...]  # the CSV lines it came from

    @property
    def msg_id(self) -> str:
        body = json.dumps(
            {c: str(v) for c, v in sorted(self.rates.rates.items())}, sort_keys=True
        ).encode()
        return f"CENTER/rates-csv/{self.rates.on}/{hashlib.sha256(body).hexdigest()[:16]}"

    @property
    def subject(self) -> str:
        return subjects.inbound(Directory.CENTER, "rates")

    def body(self) -> bytes:
        return self.rates.model_dump_json(exclude_none=True).encode()


def parse(text: str) -> tuple[list[DayRates], list[Problem]]:
    """The rates per day, or every problem found (then the list of days is empty)."""
    problems: list[Problem] = []
    text = text.removeprefix("\ufeff")  # a spreadsheet's byte-order mark
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    by_day: dict[dt.date, dict[str, tuple[Decimal, int]]] = defaultdict(dict)
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in row]
            missing = [c for c in COLUMNS if c not in header]
            extra = [c for c in header if c not in COLUMNS]
            for c in missing:
                problems.append(Problem(line, c, "column missing from the header / 缺少列"))
            for c in extra:
                problems.append(
                    Problem(
                        line,
                        c or "(blank)",
                        f"unknown column; expected {', '.join(COLUMNS)} / 未知列",
                    )
                )
            if problems:
                return [], problems
            continue
        if len(row) != len(header):
            problems.append(
                Problem(line, "", f"{len(row)} cells, the header has {len(header)} / 列数不符")
            )
            continue
        cells = {name: cell.strip() for name, cell in zip(header, row, strict=True)}
        day = _date(cells["date"], line, problems)
        currency = _currency(cells["currency"], line, problems)
        rate = _rate(cells["cny_per_unit"], line, problems)
        if day is None or currency is None or rate is None:
            continue
        seen = by_day[day].get(currency)
        if seen is not None and seen[0] != rate:
            problems.append(
                Problem(
                    line,
                    "cny_per_unit",
                    f"{currency} on {day} is {rate} here but {seen[0]} on line {seen[1]} / 同日汇率不一致",
                )
            )
            continue
        if seen is None:
            by_day[day][currency] = (rate, line)
    if header is None:
        problems.append(
            Problem(1, "", f"empty file; expected a header {','.join(COLUMNS)} / 文件为空")
        )
    days = []
    for day in sorted(by_day):
        entries = by_day[day]
        try:
            rates = Rates(
                unit=Directory.CENTER, on=day, rates={c: r for c, (r, _) in entries.items()}
            )
        except ValidationError as exc:
            first = min(line for _, line in entries.values())
            problems.extend(
                Problem(first, "", f"{day}: {e['msg']}") for e in exc.errors(include_url=False)
            )
            continue
        days.append(DayRates(rates, tuple(sorted(line for _, line in entries.values()))))
    return ([] if problems else days), problems


def _date(raw: str, line: int, problems: list[Problem]) -> dt.date | None:
    try:
        day = dt.date.fromisoformat(raw)
        if len(raw) != 10:
            raise ValueError
    except ValueError:
        problems.append(
            Problem(line, "date", f"{raw!r} is not a date like 2022-04-27 / 日期格式错误")
        )
        return None
    if not EARLIEST <= day <= LATEST:
        problems.append(
            Problem(line, "date", f"{day} is outside {EARLIEST}..{LATEST} / 日期超出范围")
        )
        return None
    return day


def _currency(raw: str, line: int, problems: list[Problem]) -> str | None:
    if not CURRENCY.match(raw):
        problems.append(
            Problem(line, "currency", f"{raw!r} is not a currency code like USD / 币种代码错误")
        )
        return None
    if raw == "CNY":
        problems.append(
            Problem(line, "currency", "CNY is 1 CNY by definition; leave it out / 人民币无需汇率")
        )
        return None
    return raw


def _rate(raw: str, line: int, problems: list[Problem]) -> Decimal | None:
    try:
        rate = Decimal(raw)
    except InvalidOperation:
        rate = None
    if rate is None or not rate.is_finite():
        problems.append(Problem(line, "cny_per_unit", f"{raw!r} is not a number / 汇率不是数值"))
        return None
    if rate <= 0:
        problems.append(
            Problem(line, "cny_per_unit", f"{raw} must be greater than 0 / 汇率须为正数")
        )
        return None
    exponent = rate.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_PLACES:
        problems.append(
            Problem(
                line,
                "cny_per_unit",
                f"{raw} has more than {MAX_PLACES} decimal places / 小数位过多",
            )
        )
        return None
    return rate
