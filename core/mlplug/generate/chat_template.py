"""Chat templates: a model's Jinja template, rendered in a sandbox, turning messages into a prompt.

GGUF files carry the template under ``tokenizer.chat_template``. It is untrusted text, so it is
rendered by Jinja2's immutable sandbox; a template that reaches for an unsafe attribute (the way
out of the sandbox) is refused with :class:`ChatTemplateError` instead of rendering blank.

>>> t = ChatTemplate("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}")
>>> t.render([{"role": "user", "content": "hi"}])
'<user>hi'
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from ..errors import MlplugError

__all__ = ["BUILTIN_TEMPLATES", "ChatTemplate", "ChatTemplateError", "Message"]

#: A chat message: at least ``role`` ("system", "user", "assistant") and ``content``.
Message = Mapping[str, Any]

#: Templates for architectures whose files often carry none, by ``general.architecture``.
BUILTIN_TEMPLATES: dict[str, str] = {
    # Gemma's turn format: a system message is folded into the first user turn.
    "gemma3": (
        "{{ bos_token }}"
        "{% set ns = namespace(system='') %}"
        "{% for m in messages %}"
        "{% if m['role'] == 'system' %}{% set ns.system = m['content'] | trim + '\n\n' %}"
        "{% else %}"
        "{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
        "<start_of_turn>{{ role }}\n{{ ns.system }}{{ m['content'] | trim }}<end_of_turn>\n"
        "{% set ns.system = '' %}"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    ),
}


class ChatTemplateError(MlplugError, ValueError):
    """A chat template does not compile, fails to render, or tries to leave its sandbox."""


def _raise_exception(message: str) -> NoReturn:
    msg = f"the chat template raised an error: {message}"
    raise ChatTemplateError(msg)


def _tojson(value: object, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


def _environment() -> Any:
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class StrictSandbox(ImmutableSandboxedEnvironment):
        """The immutable sandbox, raising on an unsafe attribute instead of rendering blank."""

        def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
            msg = f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
            raise SecurityError(msg)

    env = StrictSandbox(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.filters["tojson"] = _tojson
    return env


class ChatTemplate:
    """A compiled chat template.

    :param source: the Jinja source.
    :param bos_token: text of the model's BOS token (the template's ``bos_token``).
    :param eos_token: text of its EOS token (``eos_token``).
    :raises ChatTemplateError: the source does not compile.
    """

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        from jinja2.exceptions import TemplateError

        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            self._template = _environment().from_string(source)
        except TemplateError as exc:
            msg = f"the chat template does not compile: {exc}"
            raise ChatTemplateError(msg) from exc

    def render(
        self,
        messages: Sequence[Message],
        *,
        add_generation_prompt: bool = True,
        **variables: Any,
    ) -> str:
        """Return the prompt text for ``messages``.

        :param add_generation_prompt: end with the header of the assistant's next turn.
        :param variables: further template variables (``tools``, ...).
        :raises ChatTemplateError: the template fails, raises, or tries to leave its sandbox.
        """
        from jinja2.exceptions import SecurityError, TemplateError

        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
                msg = f"message {i} must be a mapping with 'role' and 'content', got {m!r}"
                raise ChatTemplateError(msg)
        try:
            text: str = self._template.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **variables,
            )
        except SecurityError as exc:
            msg = f"the chat template tried to escape its sandbox: {exc}"
            raise ChatTemplateError(msg) from exc
        except ChatTemplateError:
            raise
        except (TemplateError, TypeError, ValueError, KeyError, IndexError) as exc:
            msg = f"the chat template failed to render: {type(exc).__name__}: {exc}"
            raise ChatTemplateError(msg) from exc
        return text
