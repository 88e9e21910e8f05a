"""Inference serving: replicas with iteration-level (continuous) batching, fixed-service replicas,
the step-time model and its calibration, and the router contract."""
