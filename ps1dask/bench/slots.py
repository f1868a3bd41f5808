"""Where a service-bound job's slot-seconds go, from the emulator's log of its requests.

A job that waits on the service has ``10 x wall`` slot-seconds; the 10-slot bound uses
``n_requests x latency`` of them. The emulator logs when each request arrived and was
answered (``/_emulator/metrics/flights``, on the host's monotonic clock); :func:`account`
rebuilds the requests in flight over the job's time and splits the rest into its causes:

- ``start``: all slots idle before the first request (planning, store creation, listing
  set-up, task hand-off to the workers);
- ``ramp``: idle slots from the first request until all 10 are first busy (a listing
  alone in flight, units starting);
- ``middle``: idle slots between then and the last moment all 10 were busy (a slot freed
  but the next request not there yet: lease hand-off, gaps between units);
- ``tail``: idle slots after the last moment all 10 were busy, until the last answer (the
  last requests not spread over all slots);
- ``end``: after the last answer until the job returned (the last writes, the summary);
- ``held``: slot-seconds in flight beyond ``latency`` per request (server work longer than
  the latency, bodies sent slowly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ps1dask.bench.bounds import SERVICE_SLOTS

PARTS = ("start", "ramp", "middle", "tail", "end")


@dataclass(frozen=True)
class SlotAccount:
    """A job's slot-seconds (``10 x wall``) by what they were spent on (slot-seconds)."""

    wall: float
    useful: float  # n_requests x latency: the bound's share
    held: float  # in flight beyond the latency
    idle: dict[str, float]  # idle slot-seconds by phase (PARTS)
    first_request_s: float  # job start -> first request arrived
    tail_s: float  # last moment all slots were busy -> last answer
    end_s: float  # last answer -> job returned
    mean_gap_ms: float  # idle slot time per request in the middle phase, milliseconds

    def lines(self) -> list[str]:
        total = self.wall * SERVICE_SLOTS

        def part(name: str, value: float) -> str:
            return f"{name} {value:.1f} ({value / total:.1%})"

        return [
            (
                f"  slot-seconds: 10 x {self.wall:.2f} s wall = {total:.1f}: "
                f"{part('requests x latency', self.useful)}, "
                f"{part('in flight beyond latency', self.held)}"
            ),
            "  idle slot-seconds: "
            + ", ".join(part(n, self.idle[n]) for n in PARTS)
            + f"; first request {self.first_request_s:.2f} s after the job began, tail "
            f"{self.tail_s:.2f} s, end {self.end_s:.2f} s, {self.mean_gap_ms:.1f} ms idle per "
            "request between",
        ]


def account(flights: dict[str, Any], t_start: float, t_end: float, latency: float) -> SlotAccount:
    """Split ``10 x (t_end - t_start)`` slot-seconds (see the module doc).

    ``flights`` is the emulator's ``/_emulator/metrics/flights`` answer; ``t_start`` and
    ``t_end`` bracket the job on the same clock (``time.monotonic()``).
    """
    arrived = np.asarray(flights["arrived"], dtype=float)
    answered = np.asarray(flights["answered"], dtype=float)
    keep = (answered >= t_start) & (arrived <= t_end)
    arrived, answered = (
        np.clip(arrived[keep], t_start, t_end),
        np.clip(answered[keep], t_start, t_end),
    )
    wall = t_end - t_start
    n = arrived.size
    useful = n * latency
    if n == 0:
        idle = dict.fromkeys(PARTS, 0.0) | {"start": wall * SERVICE_SLOTS}
        return SlotAccount(wall, 0.0, 0.0, idle, wall, 0.0, 0.0, 0.0)
    # the in-flight count as a step function between consecutive events
    times = np.concatenate([arrived, answered, [t_start, t_end]])
    steps = np.concatenate([np.ones(n), -np.ones(n), [0, 0]])
    order = np.lexsort((-steps, times))  # at equal times, arrivals before departures
    times, level = times[order], np.cumsum(steps[order])
    dt = np.diff(times)
    level = level[:-1]
    idle_rate = SERVICE_SLOTS - np.minimum(level, SERVICE_SLOTS)
    first, last = arrived.min(), answered.max()
    full = level >= SERVICE_SLOTS
    if full.any():
        full_first = times[:-1][full].min()
        full_last = times[1:][full].max()  # the end of the last full interval
    else:
        full_first = full_last = last
    t0 = times[:-1]
    phase = np.select(
        [t0 < first, t0 < full_first, t0 < full_last, t0 < last],
        [0, 1, 2, 3],
        default=4,
    )
    idle = {name: float(np.sum((idle_rate * dt)[phase == k])) for k, name in enumerate(PARTS)}
    in_flight = float(np.sum(level * dt))
    return SlotAccount(
        wall=wall,
        useful=useful,
        held=in_flight - useful,
        idle=idle,
        first_request_s=float(first - t_start),
        tail_s=float(last - full_last),
        end_s=float(t_end - last),
        mean_gap_ms=1e3 * idle["middle"] / max(n, 1),
    )
