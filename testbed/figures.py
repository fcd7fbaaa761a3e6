"""The figures a reliability run reports: requests tried, faults injected, 5xx seen, outputs lost, memory.

Tests (and `load_tests/soak.py`) count every answer through `FIGURES.record`, saying whether a fault was
injected at the time: a 503 with `Retry-After` during a fault is the contract working; any other 5xx, or a
5xx with no fault, is unintended. Outputs generated while storage was down are registered with `spooled`;
`settle` checks at the end which of them never reached storage (lost). The suite's conftest prints
`render()` after the test summary; the soak prints it when it ends.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field

import httpx


@dataclass
class Figures:
    requests: int = 0
    faults: int = 0
    expected_5xx: int = 0
    unintended_5xx: int = 0
    unintended: collections.Counter[str] = field(default_factory=collections.Counter)
    overload_refusals: int = 0
    spooled_keys: set[str] = field(default_factory=set)
    lost_keys: set[str] | None = None
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    measures: dict[str, tuple[float, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, response, *, fault: bool = False, overload: bool = False):
        """Count one answer (an httpx or schemathesis response) and return it; `fault`: a fault was injected;
        `overload`: sent to overflow the services."""
        with self._lock:
            self.requests += 1
            status = response.status_code
            if overload and status in (429, 503):
                self.overload_refusals += 1
            if status < 500:
                return response
            if (fault or overload) and status == 503 and "retry-after" in response.headers:
                self.expected_5xx += 1
            else:
                self.unintended_5xx += 1
                self.unintended[f"{describe(response.request)} -> {status}"] += 1
        return response

    def record_failure(self, description: str, *, answered: bool = False) -> None:
        """A request that got no answer at all (a timeout or a reset connection), or (`answered`) an answer
        already recorded that breaks the contract otherwise: as bad as an unintended 5xx."""
        with self._lock:
            self.requests += 0 if answered else 1
            self.unintended_5xx += 1
            self.unintended[description] += 1

    def inject(self, faults: int = 1) -> None:
        with self._lock:
            self.faults += faults

    def spooled(self, *keys: str) -> None:
        with self._lock:
            self.spooled_keys.update(keys)

    def timing(self, name: str, seconds: float) -> None:
        """Keep the longest of the durations reported under `name`."""
        self.measure(name, seconds, "s")

    def measure(self, name: str, value: float, unit: str) -> None:
        with self._lock:
            self.measures[name] = (max(value, self.measures.get(name, (value, unit))[0]), unit)

    def memory(self, peaks: dict[str, float]) -> None:
        with self._lock:
            for name, megabytes in peaks.items():
                self.peak_rss_mb[name] = max(megabytes, self.peak_rss_mb.get(name, 0.0))

    def settle(self, is_stored) -> set[str]:
        """Check every output spooled during an outage against storage; returns (and keeps) the lost ones."""
        with self._lock:
            self.lost_keys = {key for key in self.spooled_keys if not is_stored(key)}
            return self.lost_keys

    def render(self) -> str:
        lost = "not checked" if self.lost_keys is None else str(len(self.lost_keys))
        lines = [
            f"requests tried          {self.requests}",
            f"faults injected         {self.faults}",
            f"5xx seen                {self.expected_5xx + self.unintended_5xx} "
            f"({self.expected_5xx} expected: 503 + Retry-After during a fault or overload; "
            f"{self.unintended_5xx} unintended)",
            f"overload refusals       {self.overload_refusals} (429/503 to requests beyond capacity)",
            f"outputs spooled         {len(self.spooled_keys)} (generated while storage was down)",
            f"outputs lost            {lost}",
        ]
        for name, megabytes in sorted(self.peak_rss_mb.items()):
            lines.append(f"peak RSS, {name}: {megabytes:.0f} MB")
        for name, (value, unit) in sorted(self.measures.items()):
            lines.append(f"{name}: {value:.1f} {unit}")
        lines += [f"  unintended: {what} (x{count})" for what, count in self.unintended.most_common(10)]
        if self.lost_keys:
            lines += [f"  lost: {key}" for key in sorted(self.lost_keys)]
        return "\n".join(lines)


def describe(request) -> str:
    path = request.url.path if isinstance(request, httpx.Request) else request.path_url
    return f"{request.method} {path}"


FIGURES = Figures()
