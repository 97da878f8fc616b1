"""The meaning: GPU-time states, utilization, waste, reports. Pure functions over frames."""
