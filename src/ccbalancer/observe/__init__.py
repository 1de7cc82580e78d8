"""Observability: logs, metrics, request history. Called by others; calls none of them."""
