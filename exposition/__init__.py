"""Cost metrics for Prometheus: the families ``gpuledger server`` serves on /metrics, built from a snapshot of
analysis results (``snapshot.CostSnapshot``, computed by ``gpuledger.exposing``).

Pure: ``families.build`` turns a snapshot and the server's own health figures into prometheus_client metric
families; ``collector.SnapshotCollector`` hands the latest ones to a registry. Nothing here reads the warehouse.
"""
