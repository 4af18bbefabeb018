"""Verified, resumable downloads of weights files with requests.

The file grows as ``<name>.part`` beside its destination; an interrupted transfer resumes with
an HTTP Range request; only a file whose sha256 matches is renamed into place, so the cache
never holds a corrupt entry. Proxies (HTTP(S)_PROXY, NO_PROXY) and a CA bundle
(REQUESTS_CA_BUNDLE, or MRIDENOISE_CA_BUNDLE for this tool alone) come from the environment,
as requests reads them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path

import requests

from ..errors import DownloadError
from ..progress import CancelToken, ProgressCallback, no_progress
from .hashing import sha256_of

log = logging.getLogger(__name__)

CA_BUNDLE_VARIABLE = "MRIDENOISE_CA_BUNDLE"
_CHUNK = 1 << 16


def download_verified(
    urls: list[str],
    destination: Path,
    sha256: str,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    retries: int = 3,
    timeout: tuple[float, float] = (10.0, 60.0),
    backoff_seconds: float = 1.0,
) -> Path:
    """Fetch the first URL that works into ``destination`` and check its sha256."""
    if not urls:
        raise DownloadError(f"no download address is known for {destination.name}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    shared = destination.with_name(destination.name + ".part")
    handle, name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    os.close(handle)
    partial = Path(name)  # this process's own: concurrent fetches of one file never write to one file
    with contextlib.suppress(FileNotFoundError):
        os.replace(shared, partial)  # adopt an interrupted download to resume it (only one process wins)
    try:
        return _download(urls, partial, destination, sha256, progress, cancel, retries, timeout, backoff_seconds)
    except DownloadError:
        if partial.exists() and partial.stat().st_size:
            os.replace(partial, shared)  # keep what arrived for the next attempt to resume
        raise
    finally:
        partial.unlink(missing_ok=True)


def _download(
    urls: list[str],
    partial: Path,
    destination: Path,
    sha256: str,
    progress: ProgressCallback,
    cancel: CancelToken | None,
    retries: int,
    timeout: tuple[float, float],
    backoff_seconds: float,
) -> Path:
    problems = []
    with requests.Session() as session:
        bundle = os.environ.get(CA_BUNDLE_VARIABLE)
        if bundle:
            session.verify = bundle
        for url in urls:
            for attempt in ("resume", "from scratch"):
                resumed = partial.stat().st_size > 0
                problem = _fetch_with_retries(
                    session, url, partial, timeout, progress, cancel, retries, backoff_seconds
                )
                if problem is not None:
                    problems.append(f"{url}: {problem}")
                    break
                try:
                    return _verify_and_publish(partial, destination, sha256, url)
                except DownloadError:
                    partial.write_bytes(b"")  # never resume from bytes that failed the checksum
                    if not resumed or attempt == "from scratch":
                        raise
                    log.warning("a leftover partial download of %s was stale; downloading it again", destination.name)
    raise DownloadError(f"could not download {destination.name}: " + "; ".join(problems))


def _verify_and_publish(partial: Path, destination: Path, sha256: str, url: str) -> Path:
    actual = sha256_of(partial)
    if actual != sha256:
        raise DownloadError(
            f"checksum mismatch for {destination.name} from {url}: expected {sha256}, got {actual}; nothing was cached"
        )
    os.replace(partial, destination)
    return destination


def _fetch_with_retries(
    session: requests.Session,
    url: str,
    partial: Path,
    timeout: tuple[float, float],
    progress: ProgressCallback,
    cancel: CancelToken | None,
    retries: int,
    backoff_seconds: float,
) -> str | None:
    """None once the whole file is in ``partial``, else why it could not be fetched."""
    for attempt in range(retries + 1):
        try:
            _fetch(session, url, partial, timeout, progress, cancel)
            return None
        except _PermanentError as error:
            return str(error)
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            _TransientError,
        ) as error:
            if attempt == retries:
                return f"{error.__class__.__name__}: {error}"
            wait = backoff_seconds * 2**attempt
            log.warning("download of %s failed (%s); retrying in %.1f s", url, error, wait)
            time.sleep(wait)
    return "no attempt was made"


class _PermanentError(Exception):
    """The server answered in a way retrying will not change (404, 403, ...)."""


class _TransientError(Exception):
    """A server error worth retrying (5xx, 429)."""


def _fetch(
    session: requests.Session,
    url: str,
    partial: Path,
    timeout: tuple[float, float],
    progress: ProgressCallback,
    cancel: CancelToken | None,
) -> None:
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
        if response.status_code == 416 and have:
            return  # the partial file is already complete
        if response.status_code in (429,) or response.status_code >= 500:
            raise _TransientError(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise _PermanentError(f"HTTP {response.status_code}")
        resumed = response.status_code == 206
        if not resumed:
            have = 0
        total = _total_size(response, have)
        with open(partial, "ab" if resumed else "wb") as stream:
            for chunk in response.iter_content(_CHUNK):
                if cancel is not None and cancel.cancelled:
                    cancel.raise_if_cancelled()
                stream.write(chunk)
                have += len(chunk)
                progress(have / total if total else 0.0, f"downloading: {have / 1e6:.1f} MB")
        if total and have < total:
            raise requests.exceptions.ChunkedEncodingError(f"connection closed after {have} of {total} bytes")


def _total_size(response: requests.Response, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None
