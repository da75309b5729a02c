"""How a PHP/Laravel server writes what the iFlow stand-in's opt-in modes answer.

Pure helpers of :mod:`standins.iflow`: Laravel's error pages (JSON when the
request expects JSON, as the agent's ``Accept: application/json`` makes it;
the HTML page otherwise; with ``APP_DEBUG`` on, the exception's JSON), its
validation answer (422), and results echoed the way PHP may write them back.
"""

from __future__ import annotations

import datetime as _dt
import json

__all__ = ["STATUS_TEXT", "error_page", "validation_error", "echo"]

STATUS_TEXT = {500: "Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
               404: "Not Found", 419: "Page Expired", 429: "Too Many Requests"}

_HTML = """<!DOCTYPE html>
<html lang="en">
    <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">

        <title>{text}</title>

        <style>body{{font-family:ui-sans-serif,system-ui,sans-serif;margin:0}}</style>
    </head>
    <body class="antialiased">
        <div class="relative flex items-top justify-center min-h-screen bg-gray-100 sm:items-center sm:pt-0">
            <div class="max-w-xl mx-auto sm:px-6 lg:px-8">
                <div class="flex items-center pt-8 sm:justify-start sm:pt-0">
                    <div class="px-4 text-lg text-gray-500 border-r border-gray-400 tracking-wider">{status}</div>
                    <div class="ml-4 text-lg text-gray-500 uppercase tracking-wider">{text}</div>
                </div>
            </div>
        </div>
    </body>
</html>
"""


def error_page(status: int, style: str = "json", detail: str | None = None) -> tuple[bytes, str]:
    """(body, content type) of Laravel's answer with ``status``.

    ``style``: "json" (``{"message": "Server Error"}``), "html" (the error
    page), "debug" (APP_DEBUG's JSON: the exception's own message, e.g. a
    database's, with its class, file, line and trace)."""
    text = STATUS_TEXT.get(status, "Error")
    if style == "html":
        return _HTML.format(status=status, text=text).encode(), "text/html; charset=UTF-8"
    value: dict = {"message": text}
    if style == "debug":
        value = {"message": detail or text, "exception": "Illuminate\\Database\\QueryException",
                 "file": "/var/www/iflow/vendor/laravel/framework/src/Illuminate/Database/Connection.php",
                 "line": 822, "trace": [{"file": "/var/www/iflow/app/Http/Controllers/RfidController.php",
                                         "line": 141, "function": "insert", "class": "Illuminate\\Database\\Connection"}]}
    return json.dumps(value).encode(), "application/json"


def validation_error(field: str, message: str) -> dict:
    """Laravel's 422 answer for one failed rule (``$request->validate()``)."""
    return {"message": message, "errors": {field: [message]}}


def _date(value: object, fmt: str) -> object:
    try:
        return _dt.date.fromisoformat(str(value)).strftime(fmt)
    except ValueError:
        return value


def echo(result: dict, modes: set[str], date_format: str | None) -> dict:
    """``result`` with its date, time and rfidTag written as ``modes`` say:
    "tag_number" (an all-digit tag as a JSON number: leading zeros gone),
    "hour_no_zero" (``8:05:07``), "no_seconds" (``08:05``); ``date_format`` a
    strftime format for the date (``%d.%m.%Y``, ``%Y-%m-%dT00:00:00.000000Z``)."""
    out = dict(result)
    tag, time_ = out.get("rfidTag"), out.get("time")
    if "tag_number" in modes and isinstance(tag, str) and tag.isascii() and tag.isdigit():
        out["rfidTag"] = int(tag)
    if isinstance(time_, str) and len(time_) == 8:
        if "no_seconds" in modes:
            time_ = time_[:5]
        if "hour_no_zero" in modes and time_.startswith("0"):
            time_ = time_[1:]
        out["time"] = time_
    if date_format:
        out["date"] = _date(out.get("date"), date_format)
    return out
