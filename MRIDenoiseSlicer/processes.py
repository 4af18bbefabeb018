"""Child processes of the panel: started with the console hidden, ended with their whole tree.

Inside an installed Slicer, ``PythonSlicer`` is a CTK launcher that starts ``python-real`` as its
own child, so ending the launcher alone would leave the worker running. :func:`end_process_tree`
ends every descendant first, then the process itself.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence

import psutil

Launcher = Callable[[Sequence[str], Mapping[str, str]], subprocess.Popen]
"""Starts ``args`` with extra environment variables; stdout carries stdout and stderr, as text lines."""


def launch_process(args: Sequence[str], environment: Mapping[str, str]) -> subprocess.Popen:
    """The launcher outside Slicer: a child with merged output and no console window on Windows.

    Inside Slicer the module passes one built on ``slicer.util.launchConsoleProcess`` instead.
    """
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    return subprocess.Popen(
        list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        env={**os.environ, **environment},
        creationflags=flags,
    )


def end_process_tree(pid: int, grace_seconds: float = 3.0) -> list[int]:
    """Terminate ``pid`` and all its descendants, killing those still alive after ``grace_seconds``.

    Descendants are listed before anything is signalled (once the parent is gone they would be
    re-parented and no longer found). Returns the pids that were signalled.
    """
    try:
        root = psutil.Process(pid)
        tree = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return []
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(tree, timeout=grace_seconds)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=grace_seconds)
    return [process.pid for process in tree]
