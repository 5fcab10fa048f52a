"""One module per ``ecomrl`` subcommand, each exposing ``register(app)``."""
