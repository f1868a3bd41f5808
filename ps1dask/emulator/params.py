"""Parsing of the emulated service's request parameters (pure; errors name the parameter)."""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ps1dask.exceptions import HTTPFailure, InvalidParameterError

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off", ""}


def parse_byte_range(value: str, size: int) -> tuple[int, int] | None:
    """Inclusive byte range of a ``Range`` header for a body of ``size`` bytes.

    None means "ignore the header and send everything" (malformed, or several ranges, as
    RFC 9110 allows); :class:`HTTPFailure` 416 means unsatisfiable.
    """
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
    if not match or (match[1] == "" and match[2] == ""):
        return None
    unsatisfiable = HTTPFailure(
        416,
        f"range {value!r} not satisfiable for {size} bytes",
        {"Content-Range": f"bytes */{size}"},
    )
    if match[1] == "":
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            raise unsatisfiable
        return max(0, size - suffix), size - 1
    start = int(match[1])
    if match[2] and int(match[2]) < start:
        return None  # "bytes=9-5" is malformed: ignored
    if start >= size:
        raise unsatisfiable
    end = int(match[2]) if match[2] else size - 1
    return start, min(end, size - 1)


def param_values(params: Mapping[str, Any], name: str) -> list[str]:
    """Every non-empty value of a (possibly repeated) parameter, as text."""
    getall = getattr(params, "getall", None)
    values = getall(name, []) if getall is not None else [params.get(name)]
    return [str(v).strip() for v in values if v is not None and str(v).strip()]


def float_param(params: Mapping[str, str], name: str, default: float | None = None) -> float | None:
    raw = params.get(name)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidParameterError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidParameterError(f"{name}={raw!r} is not a finite number")
    return value


def limits_param(params: Mapping[str, Any], name: str, colour: bool) -> Any:
    """``min``/``max``: one number, or (colour) one per channel as ``a,b,c``."""
    raw = params.get(name)
    if raw is None or str(raw).strip() == "":
        return None
    parts = [p for p in str(raw).split(",") if p.strip()]
    if len(parts) > (3 if colour else 1):
        raise InvalidParameterError(f"{name}={raw!r}: too many values")
    values = [float_param({name: p}, name) for p in parts]
    return values if colour else values[0]


def bool_param(params: Mapping[str, str], name: str, default: bool) -> bool:
    raw = params.get(name)
    if raw is None:
        return default
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidParameterError(f"{name}={raw!r}: expected true or false")


def parse_position_lines(text: str) -> list[tuple[int, str, str]]:
    """``(line number, ra, dec)`` of the ``ra dec`` lines of a POSTed position file (blank
    and ``#`` lines skipped; commas count as spaces)."""
    out: list[tuple[int, str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.replace(",", " ").split()
        if len(parts) < 2:
            raise InvalidParameterError(
                f"line {number} of the position file: {line!r} is not 'ra dec' in degrees"
            )
        out.append((number, parts[0], parts[1]))
    return out


def degrees_of(ra_text: str, dec_text: str, where: str) -> tuple[float, float]:
    try:
        ra, dec = float(ra_text), float(dec_text)
    except ValueError:
        raise InvalidParameterError(
            f"{where}: ra={ra_text!r} dec={dec_text!r} are not numbers in degrees"
        ) from None
    if not (math.isfinite(ra) and math.isfinite(dec)) or abs(dec) > 90:
        raise InvalidParameterError(
            f"{where}: ra={ra_text!r} dec={dec_text!r}: need finite degrees with |dec| <= 90"
        )
    return ra, dec


def loads_json(text: str) -> Any:
    """A JSON request body (empty means ``{}``); anything unparsable, too deeply nested or
    with absurd numbers is an :class:`InvalidParameterError` (a 400, never a 500)."""
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as err:
        raise InvalidParameterError(f"request body is not JSON: {err}") from None
    except (RecursionError, ValueError) as err:  # nesting depth, integer digit limit
        raise InvalidParameterError(f"request body is not usable JSON: {err}") from None


def is_local_control_request(request_host: str, origin: str | None, bind_host: str) -> bool:
    """True if a state-changing ``/_emulator/*`` request may come from this client.

    The ``Host`` header must name the emulator by a loopback name, an IP address or the host
    it was bound to (a web page cannot make a browser send those for its own domain, which
    defeats DNS rebinding); an ``Origin`` header, when a browser sends one, must be the
    emulator's own, so no other page can reconfigure it.
    """
    try:
        hostname = urlsplit("//" + request_host).hostname
    except ValueError:
        return False
    if not hostname:
        return False
    allowed = {"localhost", "127.0.0.1", "::1", bind_host.strip("[]").lower()}
    if hostname.lower() not in allowed:
        try:
            ipaddress.ip_address(hostname)
        except ValueError:
            return False
    if origin is not None:
        return origin.strip().lower() == f"http://{request_host}".lower()
    return True
