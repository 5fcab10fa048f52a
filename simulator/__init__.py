"""E-commerce simulator: emits raw logs and gives the true value of any policy."""
