"""ccbalancer: a real-time streaming load balancer between Claude Code and LLM providers."""

__version__ = "0.1.0"
