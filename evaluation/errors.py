"""Errors raised on bad OPE input (shapes, probabilities, missing columns)."""


class EvaluationError(ValueError):
    """The inputs to an estimator or to the evaluation command are invalid."""
