"""An offline, faithful stand-in for STScI's PS1 image service (ps1images.stsci.edu).

As moto is for AWS: the real URL paths, parameters, answer formats and FITS quirks over a
deterministic synthetic sky, with knobs for latency, bandwidth and seeded faults, and
counters of what clients did (requests in flight, bytes, faults).

>>> import requests
>>> from ps1dask.emulator import Emulator
>>> with Emulator(seed=0) as emu:                                      # doctest: +SKIP
...     listing = requests.get(f"{emu.url}/cgi-bin/ps1filenames.py",
...                            params={"ra": 332.6, "dec": 2.2}).text
...     emu.metrics()["max_in_flight"]

From a shell: ``ps1dask emulator --port 8000``. Point ps1dask at it with
``dask.config.set({"ps1dask.service.url": emu.url})``.

Modules, by layer: the synthetic survey (``survey``: constants, frames, image references,
warp epochs; ``stars``: the star catalogue; ``sky``: listings and truth), its pixels
(``noise``, ``coverage``, ``image_models``, ``render``, ``headers``, ``files``), and the HTTP
service (``params``, ``replies``, ``metrics``, ``faults``, ``middleware``, ``service``,
``s3``: the same files as the public S3 bucket, ``page``, and ``app``: the in-process runner).

Exports: :class:`Emulator` (the HTTP server in a background thread), :class:`Knobs`,
:data:`FAULT_KINDS`, and the sky: :class:`SyntheticSky`, :class:`ImageRef`,
:class:`WholeFileCache`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "FAULT_KINDS",
    "Emulator",
    "ImageRef",
    "Knobs",
    "SyntheticSky",
    "WholeFileCache",
]

_LAZY = {
    "Emulator": ("ps1dask.emulator.app", "Emulator"),
    "Knobs": ("ps1dask.emulator.faults", "Knobs"),
    "FAULT_KINDS": ("ps1dask.emulator.faults", "FAULT_KINDS"),
    "SyntheticSky": ("ps1dask.emulator.sky", "SyntheticSky"),
    "ImageRef": ("ps1dask.emulator.sky", "ImageRef"),
    "WholeFileCache": ("ps1dask.emulator.files", "WholeFileCache"),
}


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the synthetic sky alone does not start importing aiohttp.
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'ps1dask.emulator' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
