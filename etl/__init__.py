"""ETL: raw clickstream and order logs -> Parquet transition datasets.

Public API:

- :func:`build_transitions` (in memory, pure) and :func:`run_etl` (files in, dataset out,
  nightly ``date`` runs) returning an :class:`EtlResult` (transitions, quarantine, manifest);
- :class:`ObservationBuilder`: the state builder as the simulator's rollout observation hook;
- :func:`transform_partition` and :func:`global_inputs`: the core transform of one partition of
  users and the global steps it needs, for other engines;
- :func:`import_steps` with :class:`StepImportConfig`: step-level logs from other tools (one row
  per decision step) written as the same transition dataset (``ecomrl import``).
"""

from etl.config import EtlConfig
from etl.core import GlobalInputs, PartitionOutput, global_inputs, transform_partition
from etl.errors import EtlError
from etl.features import FeatureSpec, Scaling
from etl.observation import ObservationBuilder
from etl.pipeline import EtlResult, build_transitions, run_etl
from etl.steps import ImportResult, StepImportConfig, import_steps

__all__ = [
    "EtlConfig",
    "EtlError",
    "EtlResult",
    "FeatureSpec",
    "GlobalInputs",
    "ImportResult",
    "ObservationBuilder",
    "PartitionOutput",
    "Scaling",
    "StepImportConfig",
    "build_transitions",
    "global_inputs",
    "import_steps",
    "run_etl",
    "transform_partition",
]
