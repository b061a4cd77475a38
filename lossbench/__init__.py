"""lossbench: experiments on optimization pathologies in JAX."""

__version__ = "0.1.0"
