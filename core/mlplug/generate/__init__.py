"""Text generation: open a GGUF model with its tokenizer, generate streamed text, chat.

>>> from mlplug.generate import SamplingParams
>>> SamplingParams(temperature=0.7, top_k=40, seed=1).greedy
False

``open_model(path, ...)`` returns a :class:`TextModel` (a context manager) whose
``generate(prompt, n, sampling)`` yields text pieces as they are generated; ``tokenize``,
``detokenize`` and ``logits`` (of any positions) come with it. :class:`Chat` keeps a
conversation in the model's KV cache, rendering the file's chat template in a sandbox.
"""

from __future__ import annotations

from ..sample import Sampler, SamplingError, SamplingParams
from .chat import Chat, template_for
from .chat_template import ChatTemplate, ChatTemplateError
from .text_model import ContextLengthError, Generation, TextModel, open_model

__all__ = [
    "Chat",
    "ChatTemplate",
    "ChatTemplateError",
    "ContextLengthError",
    "Generation",
    "Sampler",
    "SamplingError",
    "SamplingParams",
    "TextModel",
    "open_model",
    "template_for",
]
