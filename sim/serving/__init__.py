"""Inference serving: replicas with iteration-level (continuous) batching, fixed-service replicas,
the roofline step-time model, and the router contract."""
