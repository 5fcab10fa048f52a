"""Test-data generators with known answers (tabular MDPs, logged episodes, one-step
recommendation worlds): used by the tests and the benchmarks, never by the pipeline."""
