"""Column mappings shipped with ecomrl (TOML): ``ga4``, ``snowplow``, ``retailrocket``."""
