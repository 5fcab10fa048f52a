"""Shared by the promotion benchmarks: the simulated world they run in."""

from __future__ import annotations

from simulator import PromotionResponse


def world(expectation_rise: float | None = None) -> PromotionResponse:
    """The default promotion response, or the same with another ``expectation_rise``."""
    if expectation_rise is None:
        return PromotionResponse()
    return PromotionResponse(expectation_rise=expectation_rise)
