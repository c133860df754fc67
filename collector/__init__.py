"""Shoumi's collector: verifies and stores agents' signed events, flags anomalies, serves the UI."""
