"""A conversation: messages rendered by the chat template, the history kept in the KV cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..sample import Sampler
from .chat_template import BUILTIN_TEMPLATES, ChatTemplate, ChatTemplateError
from .text_model import Generation

if TYPE_CHECKING:
    from ..sample import SamplingParams
    from .chat_template import Message
    from .text_model import TextModel

__all__ = ["Chat", "ChatTemplateError", "template_for"]

#: The GGUF key of a model's chat template.
TEMPLATE_KEY = "tokenizer.chat_template"


def template_for(text_model: TextModel, source: str | None = None) -> ChatTemplate:
    """Return the chat template of ``text_model``: ``source`` if given, else the file's, else
    a built-in one for its architecture.

    :raises ChatTemplateError: the file has no template and none is built in, or it does not
        compile.
    """
    config = text_model.backend.config()
    if source is None:
        source = config.string(TEMPLATE_KEY) or None
    if source is None:
        source = BUILTIN_TEMPLATES.get(config.architecture())
    if source is None:
        msg = (
            f"the model has no {TEMPLATE_KEY} and there is no built-in template for "
            f"architecture {config.architecture()!r}: give one (mlplug chat --template FILE)"
        )
        raise ChatTemplateError(msg)
    tok = text_model.need_tokenizer()
    bos = tok.piece(tok.bos_id) if tok.bos_id is not None else ""
    eos_id = config.uint("tokenizer.ggml.eos_token_id", -1)
    eos = tok.piece(eos_id) if 0 <= eos_id < tok.vocab_size else ""
    return ChatTemplate(source, bos_token=bos, eos_token=eos)


class Chat:
    """A conversation with a model. Each :meth:`say` renders the whole history with the template
    but runs only the tokens the KV cache does not hold yet.

    A reply that is stopped early (an exception such as Ctrl-C while iterating) stays in the
    history as far as it got.
    """

    def __init__(
        self,
        text_model: TextModel,
        template: ChatTemplate,
        *,
        system: str | None = None,
        sampling: SamplingParams | None = None,
    ) -> None:
        """Start a conversation (optionally with a ``system`` message)."""
        self.text_model = text_model
        self.template = template
        self.sampling = sampling
        self.messages: list[Message] = []
        if system:
            self.messages.append({"role": "system", "content": system})
        # The conversation so far as text and as the tokens the model saw or produced.
        self._text = ""
        self._tokens: list[int] = []

    def say(self, content: str, n: int = 512) -> Generation:
        """Add a user message and start the reply (at most ``n`` tokens); iterate it for text.

        :raises ContextLengthError: the conversation no longer fits the context.
        :raises ChatTemplateError: the template fails on the messages.
        """
        tm = self.text_model
        self.messages.append({"role": "user", "content": content})
        rendered = self.template.render(self.messages, add_generation_prompt=True)
        if self._tokens and rendered.startswith(self._text):
            new = tm.tokenize(rendered[len(self._text) :], add_special=False)
            tokens = self._tokens + new
        else:
            tokens = tm.tokenize(rendered, add_special=False)
            bos = tm.need_tokenizer().bos_id
            if tm.need_tokenizer().add_bos and bos is not None and tokens[:1] != [bos]:
                tokens.insert(0, bos)
        try:
            tokens = tm.prompt_tokens(tokens)
        except BaseException:
            self.messages.pop()
            raise
        gen = _ChatGeneration(self, tm, tokens, n)
        self._text, self._tokens = rendered, tokens
        return gen

    def _finish(self, gen: Generation) -> None:
        reply = gen.text
        self.messages.append({"role": "assistant", "content": reply})
        self._text += reply
        if gen.stop_reason is None:
            # Stopped mid-reply: its tokens and text may not line up; re-tokenize next turn.
            self._tokens = []
        else:
            self._tokens = self._tokens + gen.reply_tokens


class _ChatGeneration(Generation):
    """A reply: when it ends, or is stopped, it joins the conversation."""

    def __init__(self, chat: Chat, tm: TextModel, tokens: list[int], n: int) -> None:
        super().__init__(tm, tokens, n, Sampler(chat.sampling))
        self._chat = chat
        self._recorded = False

    def __next__(self) -> str:
        try:
            return super().__next__()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """End the reply here (if it has not ended) and put it into the conversation (once)."""
        super().close()
        if not self._recorded:
            self._recorded = True
            self._chat._finish(self)
