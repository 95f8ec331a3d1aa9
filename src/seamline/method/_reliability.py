"""Reliability decomposition: y(t) = mu*t + sigma*xi(t), estimated from recorded outcomes.

``y(t)`` is the cumulative count of incorrect outcomes up to virtual day ``t``. For the
renewal job an incorrect outcome is a boundary ``rejected`` event (a proposal the verifiers
refused) or a committed offer that was later reversed (a ``transitioned`` event back to
``assessing`` with ``reassess`` in its patch). The increments over fixed windows of ``dt``
days are treated as independent draws with mean ``mu*dt`` and variance ``sigma**2*dt``
(Brownian increments with drift), which gives closed-form estimates and intervals.

The fit and the simulation are pure functions over numbers; only :func:`recorded_series`
reads a store.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from seamline.errors import ConfigError
from seamline.store import Store

__all__ = [
    "COMPOSITIONS",
    "SIGMAS",
    "Composition",
    "DriftFit",
    "SimulationCell",
    "chi2_quantile",
    "daily_series",
    "fit_drift",
    "recorded_series",
    "renewal_jobs",
    "simulate",
    "synthetic_series",
]

_Z95 = statistics.NormalDist().inv_cdf(0.975)


@dataclass(frozen=True, slots=True)
class DriftFit:
    """mu (drift per day) and sigma (noise per sqrt(day)) with 95% intervals."""

    mu: float
    mu_ci: tuple[float, float]
    sigma: float
    sigma_ci: tuple[float, float]
    windows: int
    dt: float
    kind: str = "drift_fit"


def chi2_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of a chi-square with ``df`` degrees of freedom, by the
    Wilson-Hilferty cube-root normal approximation (within about 1% for df >= 10)."""
    if df < 1 or not 0.0 < p < 1.0:
        raise ConfigError(f"chi-square quantile needs df >= 1 and 0 < p < 1; got df={df}, p={p}")
    z = statistics.NormalDist().inv_cdf(p)
    c = 2.0 / (9.0 * df)
    return df * max(1.0 - c + z * math.sqrt(c), 0.0) ** 3


def fit_drift(series: Sequence[float], *, dt: float = 1.0) -> DriftFit:
    """Fit mu and sigma from ``series``: y sampled every ``dt`` days (y[0] is the start).

    mu-hat = mean(dy)/dt with a normal-approximation interval (mean +- 1.96 s/sqrt(n), over
    dt); sigma-hat**2 = var(dy)/dt (sample variance, n-1) with the chi-square interval
    (n-1)s**2/chi2 at 0.975 and 0.025, exact for Gaussian increments.
    """
    if dt <= 0:
        raise ConfigError(f"window length dt must be positive; got {dt}")
    if len(series) < 3:
        raise ConfigError(
            f"a drift fit needs at least 3 points (2 increments); got {len(series)}. "
            "Use a longer run or a shorter window."
        )
    dy = [b - a for a, b in itertools.pairwise(series)]
    n = len(dy)
    mean = statistics.fmean(dy)
    var = statistics.variance(dy, mean)
    half = _Z95 * math.sqrt(var / n)
    lo = (n - 1) * var / chi2_quantile(0.975, n - 1)
    hi_q = chi2_quantile(0.025, n - 1)
    hi = (n - 1) * var / hi_q if hi_q > 0 else math.inf
    return DriftFit(
        mu=mean / dt,
        mu_ci=((mean - half) / dt, (mean + half) / dt),
        sigma=math.sqrt(var / dt),
        sigma_ci=(math.sqrt(lo / dt), math.sqrt(hi / dt)),
        windows=n,
        dt=dt,
    )


def synthetic_series(
    mu: float, sigma: float, *, steps: int, dt: float = 1.0, seed: int = 0
) -> list[float]:
    """y(t) = mu*t + sigma*W(t) sampled every ``dt``: a known answer for the fit."""
    rng = random.Random(seed)
    y, out = 0.0, [0.0]
    for _ in range(steps):
        y += mu * dt + sigma * math.sqrt(dt) * rng.gauss(0.0, 1.0)
        out.append(y)
    return out


def daily_series(times: Iterable[datetime], *, start: datetime, days: int) -> list[float]:
    """Cumulative count of the instants in ``times`` at the end of each day 0..days-1,
    preceded by y=0 at ``start``; instants before ``start`` count on day 0."""
    if days < 1:
        raise ConfigError(f"days must be at least 1; got {days}")
    per_day = [0] * days
    for t in times:
        day = min(max((t - start).days, 0), days - 1)
        per_day[day] += 1
    out, total = [0.0], 0
    for n in per_day:
        total += n
        out.append(float(total))
    return out


async def renewal_jobs(store: Store) -> list[str]:
    """Ids of the renewal jobs recorded in ``store``, sorted."""
    jobs: set[str] = set()
    after = 0
    while page := await store.read_events(after_seq=after, limit=5000, stream_prefix="wf:renewal:"):
        for e in page:
            parts = e.stream.split(":")
            if len(parts) >= 4:
                jobs.add(parts[2])
        after = page[-1].seq
    return sorted(jobs)


async def recorded_series(store: Store, job: str, *, start: datetime) -> tuple[list[float], int]:
    """y(t) for renewal job ``job``: rejected proposals plus reversed commits per campaign
    day, cumulative, from ``start`` to the last day a boundary event was recorded (after it
    the model proposes nothing, so those days would only dilute the drift). Also returns
    the count."""
    times: list[datetime] = []
    last = start
    after = 0
    while page := await store.read_events(after_seq=after, limit=5000):
        for e in page:
            mine = e.stream.startswith(f"sdb:renewal-offer:{job}/") or e.stream.startswith(
                f"wf:renewal:{job}:"
            )
            if not mine:
                continue
            if e.stream.startswith("sdb:"):  # the model was still proposing that day
                last = max(last, e.recorded_at)
            if e.type == "rejected" and e.stream.startswith("sdb:"):
                times.append(e.recorded_at)
            elif e.type == "transitioned":
                payload = e.payload
                if payload.get("to") == "assessing" and (payload.get("patch") or {}).get(
                    "reassess"
                ):
                    times.append(e.recorded_at)
        after = page[-1].seq
    if not times and last == start:
        raise ConfigError(f"no boundary events for renewal job {job!r}; run it first")
    days = max((last - start).days + 1, 2)
    return daily_series(times, start=start, days=days), len(times)


# --- simulation over pattern compositions -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Composition:
    """A pattern composition and the share of incorrect proposals its boundary catches.

    The drift is ``base_mu * (1 - catch)``: what the architecture lets through per day.
    The ``catch`` shares are illustrative assumptions, not measurements.
    """

    name: str
    catch: float

    def mu(self, base_mu: float) -> float:
        return base_mu * (1.0 - self.catch)


COMPOSITIONS = (
    Composition("no spine", 0.0),
    Composition("P3", 0.45),
    Composition("P5", 0.75),
    Composition("P5+P4+P6", 0.93),
)
"""Illustrative: P3 checks schema and policy on a free-form next event; P5 also refuses
moves the transition table does not allow; P4's gate and P6's person catch most of the rest."""

SIGMAS = (("high", 3.0), ("mid", 1.0), ("low", 0.3))
"""Per-call model variance levels, in incorrect outcomes per sqrt(day)."""


@dataclass(frozen=True, slots=True)
class SimulationCell:
    composition: str
    mu: float
    sigma_level: str
    sigma: float
    reliability: float
    """P(max over t <= T of y(t) <= budget), Monte Carlo."""
    mean_final: float
    kind: str = "simulation_cell"


def simulate(
    *,
    base_mu: float = 1.0,
    horizon: int = 90,
    budget: float = 30.0,
    paths: int = 2000,
    seed: int = 0,
    compositions: Sequence[Composition] = COMPOSITIONS,
    sigmas: Sequence[tuple[str, float]] = SIGMAS,
) -> list[SimulationCell]:
    """Monte Carlo of y(t) = mu*t + sigma*W(t) over ``horizon`` days for every composition
    and sigma level: the probability the path stays within ``budget`` errors throughout.

    The same Gaussian draws are reused for every cell (common random numbers), so a larger
    mu can never look more reliable than a smaller one through sampling noise alone.
    """
    if paths < 1 or horizon < 1 or budget < 0:
        raise ConfigError(
            f"simulate needs paths >= 1, horizon >= 1 and budget >= 0; "
            f"got paths={paths}, horizon={horizon}, budget={budget}"
        )
    rng = random.Random(seed)
    walks: list[list[float]] = []
    for _ in range(paths):
        w, path = 0.0, []
        for _ in range(horizon):
            w += rng.gauss(0.0, 1.0)
            path.append(w)
        walks.append(path)
    cells: list[SimulationCell] = []
    for level, sigma in sigmas:
        for comp in compositions:
            mu = comp.mu(base_mu)
            ok, finals = 0, 0.0
            for path in walks:
                stays = True
                for t, w in enumerate(path, start=1):
                    if mu * t + sigma * w > budget:
                        stays = False
                        break
                ok += stays
                finals += mu * horizon + sigma * path[-1]
            cells.append(SimulationCell(comp.name, mu, level, sigma, ok / paths, finals / paths))
    return cells
