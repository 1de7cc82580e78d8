"""The ``openai`` dialect: Anthropic Messages in front, OpenAI Chat Completions behind.

``request`` translates the body, ``stream`` the chunks back into Anthropic events,
``response`` a plain JSON completion, ``errors`` the error bodies; ``dialect`` ties them to the
``Dialect`` / ``StreamDecoder`` interfaces. Everything here is sans-IO.
"""

from ccbalancer.dialects.base import SYNTHETIC_SIGNATURE_PREFIX
from ccbalancer.dialects.openai.dialect import OpenAIDialect, OpenAIStreamDecoder
from ccbalancer.dialects.openai.errors import map_openai_error
from ccbalancer.dialects.openai.request import Untranslatable, to_openai_request
from ccbalancer.dialects.openai.stream import OpenAIStreamTranslator

__all__ = [
    "SYNTHETIC_SIGNATURE_PREFIX",
    "OpenAIDialect",
    "OpenAIStreamDecoder",
    "OpenAIStreamTranslator",
    "Untranslatable",
    "map_openai_error",
    "to_openai_request",
]
