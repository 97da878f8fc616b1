"""gpuledger: which GPU-hours did useful work, which were wasted, by whom, and what should change."""

__version__ = "0.1.0"
