"""Test-data generators with known answers (synthetic transitions and bandits): used by the
tests and the benchmarks, never by the pipeline."""
