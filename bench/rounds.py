"""Paired, interleaved rounds of in-process timings, and what is read from
them: every figure with a 95 % bootstrap interval over the rounds.

What ``bench/per_request.py`` measures with (several variants of one step,
timed in one process):

- a **pass** times one variant over fresh inputs (built before, untimed).
  The time is this thread's CPU time (``time.thread_time()``): on a
  machine shared with other work, the time the process waits for a core
  is not the variant's cost. Garbage collection is handled the same way
  for every pass: ``gc.collect()``, then ``gc.freeze()`` (everything alive,
  the inputs and every variant's state included, moves to the permanent
  generation, where no collection walks it), then the timed loop with the
  collector on. So a variant pays for the collections its own allocations
  trigger, and none walks what earlier passes or other variants keep. The
  permanent generation is emptied (``gc.unfreeze()``) after the last pass;
- a **round** is one pass of every variant, in an order that rotates by
  one each round (round r starts at the r-th variant), so that no variant
  always runs first, or always after the same one;
- a **ratio** is taken inside a round (a variant's pass over the
  baseline's pass of the same round): a slow moment of this shared machine
  then mostly hits both. A figure is the median over the rounds, with a
  percentile bootstrap interval that resamples rounds
  (:func:`.common.bootstrap_interval`: 2000 resamples, ``random.Random(16)``);
- **how many**: after one untimed warm-up round, rounds are added from
  ``min_rounds`` until every ratio's interval has a half-width <=
  ``halfwidth`` of its value, or ``max_rounds``, or ``budget`` seconds.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .common import bootstrap_interval, median

Figure = tuple[float, float, float]
Round = dict[str, float]  # variant -> seconds per unit, one pass each


def timed_pass(run: Callable[[], int]) -> float:
    """CPU seconds per unit of *run* (which returns how many units it did),
    of this thread: on a machine shared with other work, the time this
    process waits for a core is not the step's cost. Call it between
    :func:`frozen`'s ends."""
    gc.collect()  # what the last pass left: only what was made since
    gc.freeze()  # its inputs and what is alive now: no collection walks them
    start = time.thread_time()
    units = run()
    return (time.thread_time() - start) / units


@contextlib.contextmanager
def frozen() -> Iterator[None]:
    """The collector's permanent generation is emptied at the end: objects
    frozen alive that died while frozen (without a cycle, they are freed
    the usual way) are collected then."""
    try:
        yield
    finally:
        gc.unfreeze()
        gc.collect()


def one_round(passes: dict[str, Callable[[], Callable[[], int]]], number: int) -> Round:
    """One pass of every variant, starting at the *number*-th. Each value of
    *passes* prepares a pass (untimed) and returns what to time."""
    names = list(passes)
    shift = number % len(names)
    timings: Round = {}
    for name in names[shift:] + names[:shift]:
        timings[name] = timed_pass(passes[name]())
    return {name: timings[name] for name in names}


def figure(rounds: Sequence[Round], statistic: Callable[[Round], float]) -> Figure:
    def of(units: Sequence[Round]) -> float:
        return median([statistic(unit) for unit in units])

    low, high = bootstrap_interval(rounds, of)
    return of(rounds), low, high


def halfwidth_of(fig: Figure) -> float:
    value, low, high = fig
    return (high - low) / 2 / value


def summarize(
    rounds: Sequence[Round],
    baselines: Sequence[str],
    pairs: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Seconds per unit of every variant, and its ratio to each baseline
    present, each with its interval; the widest ratio half-width. *pairs*
    (variant -> its own baseline): those ratios too, under ``"pairs"``."""
    names = list(rounds[0])
    seconds = {name: figure(rounds, lambda u, n=name: u[n]) for name in names}
    ratios: dict[str, dict[str, Figure]] = {}
    widest = 0.0
    for base in (b for b in baselines if b in names):
        ratios[base] = {}
        for name in names:
            if name == base:
                continue
            fig = figure(rounds, lambda u, n=name, b=base: u[n] / u[b])
            ratios[base][name] = fig
            widest = max(widest, halfwidth_of(fig))
    paired = {
        name: figure(rounds, lambda u, n=name, b=base: u[n] / u[b])
        for name, base in (pairs or {}).items()
    }
    return {
        "seconds": seconds,
        "ratios": ratios,
        "pairs": paired,
        "widest_halfwidth": widest,
    }


def measure(
    passes: dict[str, Callable[[], Callable[[], int]]],
    baselines: Sequence[str],
    min_rounds: int = 30,
    max_rounds: int = 100,
    halfwidth: float = 0.03,
    budget: float = 60.0,
    check_every: int = 5,
    progress: Callable[[str], None] | None = None,
    pairs: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Rounds until every ratio to a baseline is read to *halfwidth* (see
    the module); *pairs*: ratios read too (:func:`summarize`)."""
    started = time.monotonic()
    with frozen():
        rounds = rounds_until(
            passes,
            baselines,
            min_rounds,
            max_rounds,
            halfwidth,
            budget,
            started,
            check_every,
            progress,
        )
    summary = summarize(rounds, baselines, pairs)
    return {
        **summary,
        "rounds": len(rounds),
        "min_rounds": min_rounds,
        "max_rounds": max_rounds,
        "halfwidth_target": halfwidth,
        "budget": budget,
        "seconds_spent": time.monotonic() - started,
        "samples": rounds,
    }


def rounds_until(
    passes: dict[str, Callable[[], Callable[[], int]]],
    baselines: Sequence[str],
    min_rounds: int,
    max_rounds: int,
    halfwidth: float,
    budget: float,
    started: float,
    check_every: int,
    progress: Callable[[str], None] | None,
) -> list[Round]:
    one_round(passes, 0)  # warm-up: caches, lazily built state
    rounds: list[Round] = []
    while len(rounds) < max_rounds:
        rounds.append(one_round(passes, len(rounds)))
        enough = len(rounds) >= min_rounds
        if not enough or (len(rounds) - min_rounds) % check_every:
            continue
        widest = summarize(rounds, baselines)["widest_halfwidth"]
        spent = time.monotonic() - started
        if progress:
            progress(
                f"per-request after {len(rounds)} rounds ({spent:.0f} s): "
                f"widest half-width {widest:.1%}"
            )
        if widest <= halfwidth or spent >= budget:
            break
    return rounds
