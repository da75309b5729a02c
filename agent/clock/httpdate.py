"""The true time from an HTTPS answer's ``Date`` header (pure).

A server stamps every answer with its clock to the second (RFC 9110 §6.6.1:
"the date and time at which the message was originated"). If the request
left at ``sent_ns`` and the answer's head came back at ``received_ns`` on
``CLOCK_BOOTTIME``, the moment the server read its clock lies between the
two, so the true time minus the boot clock (the boot's *offset*, the same
quantity an NTP anchor measures) lies in::

    [D - received_ns, D + 1 s - sent_ns]

for a Date of ``D`` (servers truncate to the second). The middle of that
interval is the estimate and half its width the error: about 0.5 s plus
half the round trip. An answer served from a cache carries ``Age`` (the
seconds since the origin made it); it shifts ``D`` and widens the interval by
a second more (an ``Age`` over :data:`MAX_AGE_S` makes the answer say
nothing: the probe asked for no cached copy). Only an answer whose server was authenticated (verified TLS)
can be believed: anyone on the path can write a plain HTTP answer.

Without NTP the boot clock runs at the crystal's own rate, so an estimate
ages: :data:`DRIFT_PPM` (100 ppm, above a Pi's crystal over temperature)
per second since it was measured is added to its error.

Standard library only.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import NamedTuple

__all__ = ["DRIFT_PPM", "MAX_AGE_S", "Bound", "DateSample", "aged_error", "bound_of", "parse_http_date"]

DRIFT_PPM = 100
MAX_AGE_S = 60  # the probe asks caches for no-cache: an older copy is not believed
_S = 1_000_000_000
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_DAYS = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAYS = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_HMS = r"(\d\d):(\d\d):(\d\d)"
# RFC 9110 §5.6.7: IMF-fixdate, and the two obsolete forms a recipient must accept
_IMF = re.compile(rf"{_DAYS}, (\d\d) ([A-Z][a-z][a-z]) (\d{{4}}) {_HMS} GMT")
_RFC850 = re.compile(rf"{_LONG_DAYS}, (\d\d)-([A-Z][a-z][a-z])-(\d\d) {_HMS} GMT")
_ASCTIME = re.compile(rf"{_DAYS} ([A-Z][a-z][a-z]) ([ \d]\d) {_HMS} (\d{{4}})")


class DateSample(NamedTuple):
    """One answer's clock reading, as the HTTP client saw it."""

    date: str | None  # the Date header as received
    age: str | None  # the Age header, if a cache answered
    sent_ns: int  # boot clock just before the request was written
    received_ns: int  # boot clock when the answer's head had arrived
    authenticated: bool  # verified TLS (or plain HTTP allowed by time.http_date_insecure)
    origin: str  # the server's host name, for the log


class Bound(NamedTuple):
    """What one sample says about the boot's offset (true time - boot clock)."""

    offset_ns: int  # the estimate: the middle of the interval
    error_ns: int  # half the interval's width
    mono_ns: int  # when it was measured, on the boot clock

    @property
    def true_ns(self) -> int:
        """The true time at ``mono_ns``."""
        return self.mono_ns + self.offset_ns


def parse_http_date(text: str | None) -> int | None:
    """Seconds since the epoch for an HTTP-date, or None if it is not one."""
    if not text:
        return None
    text = text.strip()
    if m := _IMF.fullmatch(text):
        day, mon, year, hh, mm, ss = m.groups()
    elif m := _RFC850.fullmatch(text):
        day, mon, yy, hh, mm, ss = m.groups()
        year = str((1900 if int(yy) >= 70 else 2000) + int(yy))  # the epoch's century first
    elif m := _ASCTIME.fullmatch(text):
        mon, day, hh, mm, ss, year = m.groups()
    else:
        return None
    month = _MONTHS.get(mon)
    if month is None:
        return None
    try:  # datetime checks the day of the month; a leap second (:60) counts as :59
        when = datetime(int(year), month, int(day), int(hh), int(mm), min(int(ss), 59), tzinfo=UTC)
    except ValueError:
        return None
    return int(when.timestamp())


def bound_of(sample: DateSample) -> Bound | None:
    """The interval a sample puts the offset in, or None when it says nothing
    (no or an unreadable Date, an Age that is not a number, answered before it was sent)."""
    date_s = parse_http_date(sample.date)
    if date_s is None or sample.received_ns < sample.sent_ns:
        return None
    width = _S
    if sample.age is not None:
        age = sample.age.strip()
        if not (age.isascii() and age.isdigit()) or int(age) > MAX_AGE_S:
            return None  # a copy older than a minute despite no-cache: not a reading of a clock now
        date_s += int(age)
        width += _S if int(age) else 0
    lo = date_s * _S - sample.received_ns
    hi = date_s * _S + width - sample.sent_ns
    mid_mono = (sample.sent_ns + sample.received_ns) // 2
    return Bound((lo + hi) // 2, (hi - lo + 1) // 2, mid_mono)


def aged_error(bound: Bound, mono_ns: int) -> int:
    """``bound``'s error at ``mono_ns``, grown by the drift since it was measured."""
    return bound.error_ns + abs(mono_ns - bound.mono_ns) * DRIFT_PPM // 1_000_000
