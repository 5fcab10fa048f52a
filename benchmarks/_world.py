"""Shared by the promotion benchmarks: the simulated world they run in."""

from __future__ import annotations

from simulator import PromotionResponse

ARRIVAL_DAYS = 7
"""Every user's first visit falls in the first week: the simulator's default until the
arrivals spread over the whole period (``arrival_days = None``). The benchmarks pin it, so
that the figures documented from them still reproduce."""


def world(expectation_rise: float | None = None) -> PromotionResponse:
    """The default promotion response, or the same with another ``expectation_rise``."""
    if expectation_rise is None:
        return PromotionResponse()
    return PromotionResponse(expectation_rise=expectation_rise)
