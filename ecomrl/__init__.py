"""ecomrl: offline, batch reinforcement learning from logged e-commerce data.

The front door: the ``ecomrl`` command, the one configuration model and the pipeline that chains
the stage packages (``etl``, ``offline_rl``, ``evaluation``) and the ``simulator``.
"""

__version__ = "0.1.0"
