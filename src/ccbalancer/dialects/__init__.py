"""Provider dialects: how a request is sent to a kind of provider and how its stream reads.

The request path holds a ``Dialect`` and never asks which kind it is (STYLE.md). Sans-IO.
"""

from ccbalancer.dialects.base import Dialect, StreamDecoder

__all__ = ["Dialect", "StreamDecoder"]
