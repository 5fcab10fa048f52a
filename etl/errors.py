"""Errors the ETL raises on bad input; messages name the file, row and column."""


class EtlError(ValueError):
    """The raw input or the ETL configuration cannot be processed."""
