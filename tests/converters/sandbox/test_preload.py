"""What the fork server does before its first job: preload and warm up."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from converters.sandbox import preload


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
