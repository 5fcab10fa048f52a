"""Errors raised on bad training input or a tampered artifact."""


class TrainingError(ValueError):
    """The dataset, the configuration or an artifact is not usable for training."""
