"""Weights downloads against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from MRIDenoiseLib.errors import DownloadError
from MRIDenoiseLib.models.download import download_verified

PAYLOAD = os.urandom(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    requests_seen: ClassVar[list[tuple[str, str | None]]] = []
    dropped: ClassVar[set[str]] = set()

    def log_message(self, *args):
        pass

    def do_GET(self):
        mode = self.path.strip("/").split("/")[0]
        self.requests_seen.append((self.path, self.headers.get("Range")))
        if mode == "missing":
            self.send_error(404)
            return
        if mode == "slow":
            time.sleep(1.5)
        body = bytes(reversed(PAYLOAD)) if mode == "corrupt" else PAYLOAD
        start = 0
        ranged = self.headers.get("Range")
        if ranged and mode != "norange":
            start = int(ranged.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if mode in ("drop", "norange") and self.path not in self.dropped:
            self.dropped.add(self.path)
            self.wfile.write(body[start : start + 100_000])
            self.wfile.flush()
            self.close_connection = True
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client may have timed out
            self.wfile.write(body[start:])


@pytest.fixture
def server():
    _Handler.requests_seen = []
    _Handler.dropped = set()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_complete_download_is_verified_and_reports_progress(server, tmp_path):
    fractions = []
    path = download_verified(
        [f"{server}/ok/w.safetensors"], tmp_path / "w.safetensors", DIGEST, lambda f, m: fractions.append(f)
    )
    assert path.read_bytes() == PAYLOAD
    assert fractions[-1] == pytest.approx(1.0)
    assert os.listdir(tmp_path) == ["w.safetensors"]


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    path = download_verified([f"{server}/drop/w.safetensors"], tmp_path / "w.safetensors", DIGEST, backoff_seconds=0.01)
    assert path.read_bytes() == PAYLOAD
    ranges = [r for _, r in _Handler.requests_seen]
    assert ranges[0] is None
    resumed_from = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from <= 100_000  # whatever reached the disk before the cut is kept


def test_server_without_range_support_restarts_cleanly(server, tmp_path):
    path = download_verified(
        [f"{server}/norange/w.safetensors"], tmp_path / "w.safetensors", DIGEST, backoff_seconds=0.01
    )
    assert path.read_bytes() == PAYLOAD


def test_leftover_partial_file_is_resumed(server, tmp_path):
    (tmp_path / "w.safetensors.part").write_bytes(PAYLOAD[:123_456])
    download_verified([f"{server}/ok/w.safetensors"], tmp_path / "w.safetensors", DIGEST)
    assert _Handler.requests_seen[0][1] == "bytes=123456-"
    assert (tmp_path / "w.safetensors").read_bytes() == PAYLOAD


def test_corrupted_download_raises_and_caches_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_verified([f"{server}/corrupt/w.safetensors"], tmp_path / "w.safetensors", DIGEST)
    assert os.listdir(tmp_path) == []


def test_404_is_not_retried_and_caches_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_verified([f"{server}/missing/w.safetensors"], tmp_path / "w.safetensors", DIGEST, backoff_seconds=0.01)
    assert len(_Handler.requests_seen) == 1
    assert os.listdir(tmp_path) == []


def test_falls_back_to_the_next_url(server, tmp_path):
    urls = [f"{server}/missing/w.safetensors", f"{server}/ok/w.safetensors"]
    assert download_verified(urls, tmp_path / "w.safetensors", DIGEST).read_bytes() == PAYLOAD


def test_timeout_is_retried_then_reported(server, tmp_path):
    started = time.monotonic()
    with pytest.raises(DownloadError, match="Timeout"):
        download_verified(
            [f"{server}/slow/w.safetensors"],
            tmp_path / "w.safetensors",
            DIGEST,
            retries=1,
            timeout=(1.0, 0.3),
            backoff_seconds=0.01,
        )
    assert len(_Handler.requests_seen) == 2
    assert time.monotonic() - started < 10
    assert not (tmp_path / "w.safetensors").exists()


def test_a_stale_partial_file_is_downloaded_again(server, tmp_path):
    """A leftover partial holding other bytes fails the checksum once resumed: the file is fetched again."""
    (tmp_path / "w.safetensors.part").write_bytes(os.urandom(123_456))
    download_verified([f"{server}/ok/w.safetensors"], tmp_path / "w.safetensors", DIGEST)
    assert [ranged for _, ranged in _Handler.requests_seen] == ["bytes=123456-", None]
    assert (tmp_path / "w.safetensors").read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_concurrent_fetches_of_one_file_all_succeed(server, tmp_path):
    target, errors = tmp_path / "w.safetensors", []

    def fetch() -> None:
        try:
            download_verified([f"{server}/ok/w.safetensors"], target, DIGEST)
        except Exception as error:  # collected: every thread must succeed
            errors.append(error)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and target.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
