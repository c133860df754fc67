"""Ingest: verify batches from agents, store them exactly once, acknowledge after commit."""
