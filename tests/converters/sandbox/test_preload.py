"""What the fork server does before its first job: preload, warm up, stay one thread."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from converters.sandbox import preload, servers


def test_warm_up_runs_the_image_and_hash_paths_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # preload() swallows a failing warm-up (a missing codec must not stop the server):
    # called directly, a path that broke would raise here
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    converted: list[str] = []
    from converters.filetypes.image.converter import ImageConverter

    original = ImageConverter.convert

    def spy(self: ImageConverter, task: object) -> object:
        converted.append(task.output_format)  # type: ignore[attr-defined]
        return original(self, task)  # type: ignore[arg-type]

    monkeypatch.setattr(ImageConverter, "convert", spy)
    preload.warm_up()
    assert converted == ["webp", "png", "jpg"]
    assert list(tmp_path.iterdir()) == []  # its folder is gone before any job is forked


@pytest.mark.parametrize("family", ["image", "all"])
def test_fork_server_is_one_thread(family: str) -> None:
    # counted in /proc, native threads included: numpy's OpenBLAS starts a pool at import,
    # which its fork handler stops at the server's first fork (the probe job), before any job
    server = servers.ForkServer(family)
    try:
        assert os.listdir(f"/proc/{server.popen.pid}/task") == [str(server.popen.pid)]
    finally:
        server.close()
