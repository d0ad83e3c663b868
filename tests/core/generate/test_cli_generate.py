"""``mlplug run --prompt`` and ``mlplug chat`` as a user meets them, on a fake model."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from generate_fakes import text_model

import mlplug.generate
from mlplug.cli import main


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Make ``open_model`` return a fake text model; record what it was asked for."""
    seen: dict[str, Any] = {"interrupt_at": None}

    def fake_open_model(path: str, params: Any = None, **kw: Any) -> Any:
        seen.update(path=path, params=params, **kw)
        return text_model(capacity=kw.get("num_ctx") or 64, interrupt_at=seen["interrupt_at"])

    monkeypatch.setattr(mlplug.generate, "open_model", fake_open_model)
    return seen


def test_run_prompt_streams_text_and_reports_speed(
    opened: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "m.gguf", "--prompt", "abc", "-n", "3", "--kv-type", "f32"]) == 0
    out, err = capsys.readouterr()
    assert out == "def\n"
    assert "backend fake: prompt 4 tokens" in err and "decode 3 tokens" in err
    assert opened["path"] == "m.gguf" and opened["kv_dtype"].name == "F32"


def test_run_prompt_json(opened: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "m.gguf", "--prompt", "f", "--json", "--num-ctx", "20"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["text"] == "gh" and len(record["tokens"]) == 3  # g, h, end of turn
    assert set(record) == {"text", "tokens", "prompt_tokens_per_s", "decode_tokens_per_s"}
    assert opened["num_ctx"] == 20


def test_run_prompt_longer_than_the_context_is_one_line(
    opened: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "m.gguf", "--prompt", "abcdefgh", "--num-ctx", "4"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the prompt has 9 tokens, the context holds 4" in err


@pytest.mark.parametrize(
    "args",
    [
        ["--prompt", "a", "--prompt-tokens", "1"],
        [],
        ["--prompt", "a", "--kv-type", "q8"],
    ],
)
def test_run_prompt_options_are_usage_errors(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "m.gguf", *args])
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_run_bad_sampling_value_exits_2_naming_it(
    opened: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "m.gguf", "--prompt", "a", "--top-p", "2"]) == 2
    assert "top_p=2.0" in capsys.readouterr().err
    assert "path" not in opened  # refused before the model was opened


def chat(monkeypatch: pytest.MonkeyPatch, lines: str, *args: str) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    return main(["chat", "m.gguf", *args])


def test_chat_over_a_pipe_answers_each_line_and_ends_at_eof(
    opened: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert chat(monkeypatch, "ab\n\nef\n") == 0
    out = capsys.readouterr().out
    assert out == "abcdefgh\nabcdefgh\n"


def test_chat_bye_ends_the_chat(
    opened: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert chat(monkeypatch, "ab\n/bye\nef\n") == 0
    assert capsys.readouterr().out == "abcdefgh\n"


def test_ctrl_c_stops_a_reply_not_the_chat(
    opened: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    opened["interrupt_at"] = 3  # the fourth forward pass is interrupted (Ctrl-C)
    assert chat(monkeypatch, "a\nb\n") == 0
    out, err = capsys.readouterr()
    assert out == "abc\nabcdefgh\n"
    assert "(reply stopped)" in err


def test_chat_template_from_a_file(
    opened: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
) -> None:
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert chat(monkeypatch, "ef\n", "--template", str(path)) == 0
    assert capsys.readouterr().out == "gh\n"
    assert chat(monkeypatch, "ef\n", "--template", str(tmp_path / "none.jinja")) == 1
    assert "cannot read" in capsys.readouterr().err


def test_chat_refuses_a_template_escaping_its_sandbox(
    opened: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
) -> None:
    path = tmp_path / "evil.jinja"
    path.write_text("{{ cycler.__init__.__globals__.os.system('echo pwned') }}")
    assert chat(monkeypatch, "ef\n", "--template", str(path)) == 1
    out, err = capsys.readouterr()
    assert "sandbox" in err and "pwned" not in out
