"""Bad model files and bad input: typed errors naming the key or tensor, before any compute."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from model_files import Damage, TinyModel, write_gemma3, write_llama

import mlplug as ml
from mlplug.cli import main
from mlplug.generate import open_model
from mlplug.models import load_model
from mlplug.models.decoder import Decoder
from mlplug.registry import manager

pytestmark = pytest.mark.skipif(
    "cpu_numpy" not in [e.name for e in manager().backends()], reason="cpu_numpy not installed"
)

Writer = Callable[..., TinyModel]


def load(t: TinyModel) -> ml.Backend:
    """Open ``t`` on cpu_numpy with its weights loaded."""
    be = ml.new_backend(str(t.path), ml.BackendParams(alloc_memory=True), backend="cpu_numpy")
    be.load()
    return be


@pytest.mark.parametrize("write", [write_llama, write_gemma3], ids=["llama", "gemma3"])
@pytest.mark.parametrize(
    ("damage", "key"),
    [
        (Damage(drop=("blk.1.ffn_down.weight",)), "blk.1.ffn_down.weight"),
        (Damage(drop=("output_norm.weight",)), "output_norm.weight"),
        (Damage(shapes={"blk.0.attn_k.weight": (24, 0)}), "blk.0.attn_k.weight"),
        (Damage(shapes={"blk.1.attn_output.weight": (0, 8)}), "blk.1.attn_output.weight"),
        (Damage(head_count=5), "attention.head_count"),
        (Damage(head_count=3), "attention.head_count"),
        (Damage(head_count_kv=3), "attention.head_count_kv"),
    ],
    ids=["missing-ffn", "missing-norm", "k-shape", "o-shape", "heads-5", "heads-3", "kv-heads-3"],
)
def test_contradicting_files_name_what_is_wrong(
    tmp_path: Path, write: Writer, damage: Damage, key: str
) -> None:
    """Missing tensors, wrong shapes and head counts that do not fit are ModelFileErrors."""
    # A 0 in a damaged shape means "the right size, plus 8".
    t0 = write(tmp_path / "ok.gguf")
    shapes = {
        name: tuple(s or (t0.weights[name].shape[i] + 8) for i, s in enumerate(shape))
        for name, shape in damage.shapes.items()
    }
    bad = dataclasses.replace(damage, shapes=shapes)
    t = write(tmp_path / "bad.gguf", damage=bad)
    be = load(t)
    with be, pytest.raises(ml.ModelFileError) as info:
        load_model(be)
    assert info.value.key == key or key in str(info.value)
    assert key in str(info.value)


def test_unknown_architecture_is_not_supported(tmp_path: Path) -> None:
    """A file of an architecture nobody registered: NotSupportedError listing the known ones."""
    t = write_llama(tmp_path / "x.gguf", arch="mamba9")
    with load(t) as be, pytest.raises(ml.NotSupportedError, match=r"'mamba9'.*gemma3, llama"):
        load_model(be)


@pytest.mark.parametrize("write", [write_llama, write_gemma3], ids=["llama", "gemma3"])
def test_prompt_longer_than_the_context(tmp_path: Path, write: Writer) -> None:
    """More positions than the context, or a token outside the vocabulary: ShapeErrors."""
    t = write(tmp_path / "m.gguf")
    with load(t) as be, load_model(be, num_ctx=8) as model:
        assert model.capacity == 8
        with pytest.raises(ml.ShapeError, match=r"\[0, 8\)"):
            model.forward(list(range(9)), range(9))
        with pytest.raises(ml.ShapeError, match="token ids"):
            model.forward([t.vocab], [0])
        with pytest.raises(ml.ShapeError, match="kv_dtype"):
            load_model(be, kv_dtype="q4_0")


@pytest.mark.parametrize(
    ("vocabulary", "key"),
    [
        ({"eos_token_id": 99}, "tokenizer.ggml.eos_token_id"),
        ({"token_type": [1, 1, 1]}, "tokenizer.ggml.token_type"),
        ({"model": "gpt2", "pre": "gpt-2", "merges": ["a zz"]}, "tokenizer.ggml.merges"),
        ({"model": "gpt2", "pre": "gpt-2"}, "tokenizer.ggml.merges"),
    ],
    ids=["eos-id", "types", "merge-names-no-token", "no-merges"],
)
def test_a_bad_vocabulary_in_the_file_fails_before_any_compute(
    tmp_path: Path,
    vocabulary: dict[str, object],
    key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Opening a model whose vocabulary is unusable: a ModelFileError naming the key, no pass."""

    def no_compute(*args: object) -> None:
        msg = "a forward pass ran"
        raise AssertionError(msg)

    monkeypatch.setattr(Decoder, "_pass", no_compute)
    t = write_gemma3(tmp_path / "m.gguf", tokenizer=True, damage=Damage(vocabulary=vocabulary))
    with pytest.raises(ml.ModelFileError) as info:
        open_model(str(t.path), backend="cpu_numpy")
    assert info.value.key == key, str(info.value)
    assert main(["run", str(t.path), "--prompt", "hi", "--backend", "cpu_numpy"]) == 1
    err = capsys.readouterr().err
    assert key in err and err.count("\n") == 1, err
