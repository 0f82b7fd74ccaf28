"""Dates written in many human formats, and their ISO form: a character-level translation task.

Every example is one calendar date (:class:`datetime.date`) written in one of
:data:`FORMATS` with a random letter case (as written, lower or upper case),
and its target is the ISO 8601 form ``YYYY-MM-DD``::

    "Sunday, 22 November 2026"  ->  "2026-11-22"
    "NOV 22, 2026"              ->  "2026-11-22"
    "22.11.26"                  ->  "2026-11-22"

Day and month names are English and come from this module, not from the
locale. The two-digit year of ``"%d.%m.%y"`` is read in the window
1950-2049 (``50`` is 1950, ``49`` is 2049), the default range of dates
here. Everything random takes an explicit :class:`numpy.random.Generator`.

Characters are integers: source characters are ``1 + SOURCE_CHARS.index(ch)``
with 0 the padding; target tokens are :data:`PAD` (0), :data:`START` (1),
:data:`END` (2), then the digits and ``-`` (:data:`TARGET_CHARS`).
"""

from __future__ import annotations

import datetime
from typing import Callable, NamedTuple, Sequence

import numpy as np

__all__ = [
    "MONTHS",
    "DAYS",
    "SOURCE_CHARS",
    "SOURCE_VOCAB",
    "TARGET_CHARS",
    "PAD",
    "START",
    "END",
    "TARGET_VOCAB",
    "TARGET_LENGTH",
    "FORMATS",
    "FORMAT_NAMES",
    "CASES",
    "MAX_SOURCE_LENGTH",
    "format_date",
    "parse_two_digit_year",
    "all_dates",
    "split_dates",
    "DateExamples",
    "encode_source",
    "encode_target",
    "decode_target",
    "make_examples",
]

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

SOURCE_CHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ,./-"
SOURCE_VOCAB = 1 + len(SOURCE_CHARS)  # 0 is padding
TARGET_CHARS = "0123456789-"
PAD, START, END = 0, 1, 2
TARGET_VOCAB = 3 + len(TARGET_CHARS)
TARGET_LENGTH = 11  # "YYYY-MM-DD" and the end token
FIRST, LAST = datetime.date(1950, 1, 1), datetime.date(2049, 12, 31)


def _ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _day(d: datetime.date, padded: bool) -> str:
    return f"{d.day:02d}" if padded else str(d.day)


# name -> writer(date, padded_day) -> str. Formats with a month or day name write the day
# zero-padded or not (``padded_day``); all-numeric formats always pad it.
FORMATS: dict[str, Callable[[datetime.date, bool], str]] = {
    "d Mon yyyy": lambda d, p: f"{_day(d, p)} {MONTHS[d.month - 1][:3]} {d.year}",
    "Month d, yyyy": lambda d, p: f"{MONTHS[d.month - 1]} {_day(d, p)}, {d.year}",
    "yyyy/mm/dd": lambda d, p: f"{d.year}/{d.month:02d}/{d.day:02d}",
    "Weekday, d Month yyyy": lambda d, p: f"{DAYS[d.weekday()]}, {_day(d, p)} {MONTHS[d.month - 1]} {d.year}",
    "dd.mm.yy": lambda d, p: f"{d.day:02d}.{d.month:02d}.{d.year % 100:02d}",
    "mm/dd/yyyy": lambda d, p: f"{d.month:02d}/{d.day:02d}/{d.year}",
    "Mon d, yyyy": lambda d, p: f"{MONTHS[d.month - 1][:3]} {_day(d, p)}, {d.year}",
    "dth of Month yyyy": lambda d, p: f"{_ordinal(d.day)} of {MONTHS[d.month - 1]} {d.year}",
    "d-Mon-yyyy": lambda d, p: f"{_day(d, p)}-{MONTHS[d.month - 1][:3]}-{d.year}",
    "Wkd d Mon yyyy": lambda d, p: f"{DAYS[d.weekday()][:3]} {_day(d, p)} {MONTHS[d.month - 1][:3]} {d.year}",
    "Month dth, yyyy": lambda d, p: f"{MONTHS[d.month - 1]} {_ordinal(d.day)}, {d.year}",
    "yyyymmdd": lambda d, p: f"{d.year}{d.month:02d}{d.day:02d}",
    "dd.mm.yyyy": lambda d, p: f"{d.day:02d}.{d.month:02d}.{d.year}",
    "Weekday, Month d, yyyy": lambda d, p: f"{DAYS[d.weekday()]}, {MONTHS[d.month - 1]} {_day(d, p)}, {d.year}",
}
FORMAT_NAMES = tuple(FORMATS)
CASES = ("as written", "lower", "upper")
MAX_SOURCE_LENGTH = 32  # the longest, "Wednesday, September 22, 2026", has 29 characters


def format_date(date: datetime.date, fmt: str, case: str = "as written", padded_day: bool = True) -> str:
    """``date`` written in format ``fmt`` (a key of :data:`FORMATS`) and letter ``case`` (one of :data:`CASES`).

    >>> format_date(datetime.date(2026, 11, 22), "Weekday, d Month yyyy")
    'Sunday, 22 November 2026'
    >>> format_date(datetime.date(2026, 11, 2), "Month dth, yyyy", "lower")
    'november 2nd, 2026'
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMAT_NAMES}, got {fmt!r}")
    if case not in CASES:
        raise ValueError(f"case must be one of {CASES}, got {case!r}")
    text = FORMATS[fmt](date, padded_day)
    return text.lower() if case == "lower" else text.upper() if case == "upper" else text


def parse_two_digit_year(yy: int) -> int:
    """The year of ``dd.mm.yy``: 1950-2049."""
    return 1900 + yy if yy >= 50 else 2000 + yy


def all_dates(first: datetime.date = FIRST, last: datetime.date = LAST) -> list:
    """Every date from ``first`` to ``last`` inclusive."""
    return [first + datetime.timedelta(days=i) for i in range((last - first).days + 1)]


def split_dates(rng: np.random.Generator, held_out: float = 0.1, first=FIRST, last=LAST) -> tuple[list, list]:
    """The calendar from ``first`` to ``last`` split at random into (training dates, held-out dates).

    A held-out date never appears in training, in any format.
    """
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must lie in (0, 1), got {held_out!r}")
    dates = all_dates(first, last)
    order = rng.permutation(len(dates))
    n = int(round(held_out * len(dates)))
    return [dates[i] for i in sorted(order[n:])], [dates[i] for i in sorted(order[:n])]


class DateExamples(NamedTuple):
    """Encoded examples, the example axis first."""

    src: np.ndarray  # [N, MAX_SOURCE_LENGTH] int32 source characters, 0-padded
    src_length: np.ndarray  # [N] int32
    tgt: np.ndarray  # [N, TARGET_LENGTH] int32 target tokens, the end token last
    text: list  # N source strings
    iso: list  # N target strings "YYYY-MM-DD"
    fmt: list  # N format names


def encode_source(text: str) -> np.ndarray:
    """``[MAX_SOURCE_LENGTH]`` int32 character ids of ``text``, 0-padded."""
    if len(text) > MAX_SOURCE_LENGTH:
        raise ValueError(f"text must have at most {MAX_SOURCE_LENGTH} characters, got {len(text)}: {text!r}")
    out = np.zeros(MAX_SOURCE_LENGTH, np.int32)
    out[: len(text)] = [1 + SOURCE_CHARS.index(ch) for ch in text]
    return out


def encode_target(iso: str) -> np.ndarray:
    """``[TARGET_LENGTH]`` int32 target tokens of ``"YYYY-MM-DD"`` and the end token."""
    return np.array([3 + TARGET_CHARS.index(ch) for ch in iso] + [END], np.int32)


def decode_target(tokens: Sequence[int]) -> str:
    """The characters of target tokens up to (not including) the first end token; others as ``?``."""
    out = []
    for t in tokens:
        t = int(t)
        if t == END:
            break
        out.append(TARGET_CHARS[t - 3] if 3 <= t < TARGET_VOCAB else "?")
    return "".join(out)


def make_examples(dates: Sequence[datetime.date], n: int, rng: np.random.Generator,
                  formats: Sequence[str] = FORMAT_NAMES) -> DateExamples:
    """``n`` examples: a date drawn from ``dates``, a format from ``formats``, a case and day padding, all uniform."""
    src = np.zeros((n, MAX_SOURCE_LENGTH), np.int32)
    src_length = np.zeros(n, np.int32)
    tgt = np.zeros((n, TARGET_LENGTH), np.int32)
    texts, isos, fmts = [], [], []
    picks = rng.integers(0, len(dates), n)
    fmt_picks = rng.integers(0, len(formats), n)
    case_picks = rng.integers(0, len(CASES), n)
    padded = rng.random(n) < 0.5
    for i in range(n):
        date, fmt = dates[picks[i]], formats[fmt_picks[i]]
        text = format_date(date, fmt, CASES[case_picks[i]], bool(padded[i]))
        src[i] = encode_source(text)
        src_length[i] = len(text)
        iso = date.isoformat()
        tgt[i] = encode_target(iso)
        texts.append(text)
        isos.append(iso)
        fmts.append(fmt)
    return DateExamples(src, src_length, tgt, texts, isos, fmts)
