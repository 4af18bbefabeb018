"""Catalogue, safetensors-only weights, bundled -> cache -> download resolution, user models."""

from __future__ import annotations

import json
import pickle
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from MRIDenoiseLib.errors import ModelError
from MRIDenoiseLib.models.catalog import Catalog, ModelEntry, load_catalog, register_user_model
from MRIDenoiseLib.models.hashing import sha256_of
from MRIDenoiseLib.models.paths import bundled_models_dir
from MRIDenoiseLib.models.store import cached_path, locate_weights, resolve_weights
from MRIDenoiseLib.models.weights import load_network, save_weights
from MRIDenoiseLib.nets import build_network

TINY = {"context": 1, "channels": [4, 8]}


def tiny_weights(path):
    torch.manual_seed(0)
    network = build_network("residual-unet-2.5d", TINY)
    return save_weights(path, network, "residual-unet-2.5d", TINY)


def network_entry(name="tiny", digest="0" * 64, **extra) -> ModelEntry:
    return ModelEntry(
        id=name,
        title="Tiny",
        description="test",
        kind="network",
        architecture="residual-unet-2.5d",
        arguments=TINY,
        weights=f"{name}.safetensors",
        sha256=digest,
        **extra,
    )


def test_bundled_catalogue_is_complete_and_has_one_default():
    catalog = load_catalog()
    assert sum(entry.default for entry in catalog) == 1
    required = {
        "id",
        "title",
        "description",
        "architecture",
        "arguments",
        "input",
        "weights",
        "sha256",
        "size",
        "urls",
        "license",
        "citation",
        "training",
        "metrics",
    }
    for raw in json.loads((bundled_models_dir() / "catalog.json").read_text())["models"]:
        entry = ModelEntry(**raw)
        assert required <= set(entry.to_dict())
        assert entry.input in ("scalar", "dwi")


def test_every_bundled_network_verifies_and_loads():
    for entry in load_catalog():
        if entry.kind != "network":
            continue
        path, status = locate_weights(entry)
        assert status == "bundled", entry.id
        assert path.stat().st_size == entry.size
        network = load_network(path, entry.architecture, entry.network_arguments())
        assert sum(p.numel() for p in network.parameters()) > 0


def test_unknown_id_lists_the_known_ones():
    with pytest.raises(ModelError, match=r"unknown model id 'nope'.*nlm"):
        load_catalog().get("nope")


def test_catalogue_needs_exactly_one_default():
    with pytest.raises(ModelError, match="exactly one default"):
        Catalog([network_entry("a"), network_entry("b")])


def test_planes_come_from_the_catalogue_entry():
    from MRIDenoiseLib.pipeline import load_denoiser

    entry = load_catalog().get(None)
    denoiser, _ = load_denoiser(None, "cpu", refine=False)
    assert denoiser.planes == entry.planes
    with pytest.raises(ModelError, match="planes must be"):
        ModelEntry(id="x", title="x", description="", kind="classical", architecture="nlm", planes="sideways")


def test_weights_round_trip_through_safetensors(tmp_path):
    digest = tiny_weights(tmp_path / "w.safetensors")
    assert digest == sha256_of(tmp_path / "w.safetensors")
    network = load_network(tmp_path / "w.safetensors", "residual-unet-2.5d", TINY)
    torch.manual_seed(0)
    reference = build_network("residual-unet-2.5d", TINY)
    for (name, a), (_, b) in zip(network.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_pickled_or_foreign_files_are_refused(tmp_path):
    pickled = tmp_path / "evil.pt"
    pickled.write_bytes(pickle.dumps({"weight": 1}))
    with pytest.raises(ModelError, match=r"only \.safetensors"):
        load_network(pickled, "residual-unet-2.5d", TINY)
    disguised = tmp_path / "evil.safetensors"
    disguised.write_bytes(pickle.dumps({"weight": 1}))
    with pytest.raises(ModelError, match="not a readable safetensors"):
        load_network(disguised, "residual-unet-2.5d", TINY)


def test_wrong_architecture_is_reported(tmp_path):
    tiny_weights(tmp_path / "w.safetensors")
    with pytest.raises(ModelError, match="does not match architecture"):
        load_network(tmp_path / "w.safetensors", "residual-unet-2.5d", {"context": 2, "channels": [4, 8]})


@pytest.fixture
def weights_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    digest = tiny_weights(served / "tiny.safetensors")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(served)))
    httpd.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/tiny.safetensors", digest
    httpd.shutdown()
    httpd.server_close()


def test_missing_weights_are_downloaded_into_the_cache_once(weights_server):
    url, digest = weights_server
    entry = network_entry(digest=digest, urls=[url])
    assert locate_weights(entry) == (None, "missing")
    path = resolve_weights(entry)
    assert path == cached_path(entry) and sha256_of(path) == digest
    assert locate_weights(entry) == (path, "cached")


def test_offline_mode_never_downloads_and_says_where_to_put_the_file(weights_server, monkeypatch):
    url, digest = weights_server
    monkeypatch.setenv("MRIDENOISE_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"MRIDENOISE_OFFLINE.*copy the file to"):
        resolve_weights(network_entry(digest=digest, urls=[url]))


def test_corrupt_cached_file_is_replaced_by_a_verified_download(weights_server):
    url, digest = weights_server
    entry = network_entry(digest=digest, urls=[url])
    cached_path(entry).parent.mkdir(parents=True)
    cached_path(entry).write_bytes(b"garbage")
    assert locate_weights(entry) == (None, "corrupt")
    assert sha256_of(resolve_weights(entry)) == digest


def test_user_models_are_listed_and_checked(tmp_path):
    digest = tiny_weights(tmp_path / "mine.safetensors")
    entry = network_entry("mine", digest)
    entry.weights = str(tmp_path / "mine.safetensors")
    register_user_model(entry)
    catalog = load_catalog()
    assert catalog.get("mine").user and not catalog.get("mine").default
    assert resolve_weights(catalog.get("mine")) == tmp_path / "mine.safetensors"
    (tmp_path / "mine.safetensors").write_bytes(b"tampered")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        resolve_weights(load_catalog().get("mine"))
