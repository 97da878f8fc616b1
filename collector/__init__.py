"""Reading the world: NVML, dcgm-exporter, Prometheus and the simulated fleet. Hands rows to `warehouse`."""
