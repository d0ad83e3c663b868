"""Chat templates in the sandbox, and conversations that keep their history in the KV cache."""

from __future__ import annotations

import pytest
from generate_fakes import TEMPLATE, text_model

from mlplug.errors import MlplugError
from mlplug.generate import Chat, ChatTemplate, ChatTemplateError, template_for
from mlplug.generate.chat_template import BUILTIN_TEMPLATES

HI = [{"role": "user", "content": "hi"}]


def test_a_template_renders_messages_and_the_generation_prompt() -> None:
    t = ChatTemplate(TEMPLATE, bos_token="<bos>")
    assert t.render(HI) == "<bos><start>user:hi<eot>\n<start>model:"
    assert t.render(HI, add_generation_prompt=False) == "<bos><start>user:hi<eot>\n"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__ }}",
        "{{ raise_exception.__globals__ }}",
        "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
        "{{ messages.append(1) }}",
    ],
)
def test_a_template_that_tries_to_escape_the_sandbox_is_refused(source: str) -> None:
    with pytest.raises(ChatTemplateError, match="sandbox") as info:
        ChatTemplate(source).render(HI)
    assert isinstance(info.value, MlplugError)


def test_template_errors_are_typed() -> None:
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for m in messages %}")
    with pytest.raises(ChatTemplateError, match="only user"):
        ChatTemplate("{{ raise_exception('only user') }}").render(HI)
    with pytest.raises(ChatTemplateError, match="'role' and 'content'"):
        ChatTemplate(TEMPLATE).render([{"content": "x"}])


def test_the_builtin_gemma_template_folds_the_system_message_into_the_first_turn() -> None:
    t = ChatTemplate(BUILTIN_TEMPLATES["gemma3"], bos_token="<bos>")
    text = t.render(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
        ]
    )
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )


def test_template_for_prefers_the_file_and_names_the_key_when_there_is_none() -> None:
    tm = text_model(template=TEMPLATE)
    assert template_for(tm).render(HI).startswith("<bos><start>user:hi")
    assert template_for(tm, "x{{ eos_token }}").render(HI) == "x<eos>"
    with pytest.raises(ChatTemplateError, match=r"tokenizer\.chat_template"):
        template_for(text_model(template=""))


def test_a_conversation_runs_only_each_new_turn() -> None:
    with text_model() as tm:
        chat = Chat(tm, template_for(tm))
        first = chat.say("ab")
        assert "".join(first) == "abcdefgh"  # after ":" comes "a" in the fake language
        after_first = tm.model.computed
        prompt_one = tm.tokenize("<start>user:ab<eot>\n<start>model:")
        assert after_first == len(prompt_one) + len("abcdefgh")
        second = chat.say("ef")
        assert "".join(second) == "abcdefgh"
        # The second turn runs the end of the reply's turn and the new user turn, nothing before.
        new = tm.tokenize("<eot>\n<start>user:ef<eot>\n<start>model:", add_special=False)
        assert second.prompt_computed == len(new)
        assert tm.model.computed == after_first + len(new) + len("abcdefgh")
        assert [m["role"] for m in chat.messages] == ["user", "assistant", "user", "assistant"]
        assert chat.messages[1]["content"] == "abcdefgh"


def test_a_stopped_reply_stays_in_the_history_and_the_chat_goes_on() -> None:
    with text_model(interrupt_at=3) as tm:
        chat = Chat(tm, template_for(tm))
        reply = chat.say("a")
        with pytest.raises(KeyboardInterrupt):
            for _ in reply:
                pass
        assert chat.messages[-1] == {"role": "assistant", "content": "abc"}
        assert "".join(chat.say("f")) == "abcdefgh"  # the fake model checks the positions
        assert chat.messages[-1]["content"] == "abcdefgh"


def test_a_conversation_too_long_for_the_context_is_refused_before_compute() -> None:
    with text_model(capacity=30) as tm:
        chat = Chat(tm, template_for(tm))
        "".join(chat.say("g"))
        calls = len(tm.model.calls)
        with pytest.raises(MlplugError, match="context holds 30"):
            chat.say("a" * 40)
        assert len(tm.model.calls) == calls
        assert chat.messages[-1]["role"] == "assistant"  # the refused message is not kept
