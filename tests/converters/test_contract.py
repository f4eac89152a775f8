"""The converter contract (converters/base.py), one suite over every registered converter.

As saq runs one test suite over every queue backend, these tests run over the registry: a
converter added to `converters.registry.CONVERTERS` is checked here without a line of its own.

- every pair publishes an options schema (valid JSON Schema) whose defaults validate, both
  against that schema and through `Registry.validate`, which fills them in for a job;
- converting a small generated input in the environment the sandbox gives a job (TMPDIR and
  HOME inside the workdir, `child.job_environment`), a converter writes only inside its
  workdir (Python-level writes seen through an audit hook; the working directory it inherits
  must stay empty) and reports progress only between 0 and 1.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from PIL import Image

from converters.base import Converter, Task
from converters.registry import registry
from converters.sandbox import child
from tests.converters.filetypes.data.test_data import write_input
from tests.converters.samples_media import make
from tests.pdf_samples import make_pdf

REGISTRY = registry()
CONVERTERS: list[Converter] = [c for ft in REGISTRY.filetypes for c in REGISTRY._by_filetype[ft]]


def _id(conv: Converter) -> str:
    return f"{conv.filetype}:{conv.engine}"


@pytest.mark.parametrize("conv", CONVERTERS, ids=_id)
def test_every_pair_has_an_options_schema_whose_defaults_validate(conv: Converter) -> None:
    wrong: list[str] = []
    for src, dsts in sorted(conv.pairs().items()):
        for dst in sorted(dsts):
            schema = REGISTRY.options_schema(conv.filetype, src, dst)
            jsonschema.Draft202012Validator.check_schema(schema)
            json.dumps(schema)  # published as is by GET /v1/formats and GraphQL
            defaults = {
                name: opt.default for name, opt in conv.options(src, dst).items() if opt.default is not None
            }
            errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(defaults)]
            if errors:
                wrong.append(f"{src} -> {dst}: {errors}")
                continue
            # what a job gets when the caller sends no options: exactly the defaults
            if REGISTRY.validate(conv.filetype, src, dst, {}) != defaults:
                wrong.append(f"{src} -> {dst}: validate({{}}) is not the defaults")
            if REGISTRY.validate(conv.filetype, src, dst, defaults) != defaults:
                wrong.append(f"{src} -> {dst}: the defaults, sent back, do not validate to themselves")
    assert not wrong, "\n".join(wrong)


# --------------------------------------------------------------- one small input per filetype


def _png(folder: Path) -> Path:
    path = folder / "sample.png"
    Image.linear_gradient("L").resize((64, 48)).convert("RGB").save(path)
    return path


def _text(folder: Path) -> Path:
    path = folder / "sample.txt"
    path.write_text("checksum me\n")
    return path


def _markdown(folder: Path) -> Path:
    path = folder / "sample.md"
    path.write_text("# Title\n\nSome *text* and a [link](https://example.org).\n\n- one\n- two\n")
    return path


def _zip(folder: Path) -> Path:
    path = folder / "sample.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.txt", "alpha\n")
        zf.writestr("dir/b.txt", "beta\n")
    return path


SAMPLES: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "image": ("png", _png),
    "hash": ("txt", _text),
    "data": ("json", lambda folder: write_input("json", folder)),
    "audio": ("wav", lambda folder: make("wav", folder / "sample.wav", seconds=1)),
    "video": ("mp4", lambda folder: make("mp4", folder / "sample.mp4", seconds=1)),
    "document": ("md", _markdown),
    "ebook": ("md", _markdown),
    "pdf": ("pdf", lambda folder: make_pdf(folder / "sample.pdf", pages=2)),
    "archive": ("zip", _zip),
}

# LibreOffice (md -> pdf goes through docx) and video encoders take seconds each
_SLOW = {("document", "pdf"), ("ebook", "pdf")} | {
    ("video", fmt) for fmt in ("avi", "gif", "mkv", "mov", "mp4", "webm")
}


def _cases() -> Iterator[Any]:
    for conv in CONVERTERS:
        if conv.filetype not in SAMPLES:
            yield pytest.param(conv, "", "", id=f"{_id(conv)}:no-sample", marks=pytest.mark.xfail(
                reason="no sample input for this filetype in SAMPLES", strict=True
            ))  # fmt: skip
            continue
        src = SAMPLES[conv.filetype][0]
        for dst in sorted(conv.pairs().get(src, ())):
            marks = [pytest.mark.slow] if (conv.filetype, dst) in _SLOW else []
            yield pytest.param(conv, src, dst, id=f"{conv.filetype}:{src}-{dst}", marks=marks)


class _Writes:
    """Paths written by Python code (open for writing, mkdir, rename, remove, link...)."""

    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    EVENTS = {
        "os.mkdir": (0,), "os.rename": (0, 1), "os.replace": (0, 1), "os.remove": (0,),
        "os.rmdir": (0,), "os.link": (0, 1), "os.symlink": (1,), "os.truncate": (0,),
        "os.chmod": (0,), "shutil.copyfile": (1,), "shutil.copytree": (1,), "shutil.move": (0, 1),
        "shutil.rmtree": (0,),
    }  # fmt: skip

    def __init__(self) -> None:
        self.recording = False
        self.paths: list[Path] = []
        self._lock = threading.Lock()
        sys.addaudithook(self._hook)  # cannot be removed: it records only while `recording`

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.recording:
            return
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & self.WRITE_FLAGS
            )
            if writing:
                self._add(path)
        elif event in self.EVENTS:
            if event in ("os.mkdir", "os.remove", "os.rmdir", "os.chmod") and args[-1] is not None:
                return  # relative to a directory descriptor (tempfile's cleanup): not a path here
            for i in self.EVENTS[event]:
                self._add(args[i])

    def _add(self, path: Any) -> None:
        if isinstance(path, (str, bytes, os.PathLike)):
            p = Path(os.fsdecode(path))
            if p.suffix == ".pyc" or str(p).startswith(("/dev/", "/proc/")):
                return  # byte-code caches of late imports; /dev/null
            with self._lock:
                self.paths.append(p if p.is_absolute() else Path.cwd() / p)


_WRITES = _Writes()


@pytest.mark.parametrize(("conv", "src", "dst"), list(_cases()))
def test_converting_writes_only_inside_the_workdir_and_reports_progress_from_0_to_1(
    conv: Converter, src: str, dst: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = SAMPLES[conv.filetype][1](tmp_path)
    workdir, outside_cwd = tmp_path / "work", tmp_path / "cwd"
    for d in (workdir, workdir / "tmp", outside_cwd):
        d.mkdir()
    (workdir / f"input.{src}").write_bytes(sample.read_bytes())
    progress: list[float] = []
    task = Task(
        [workdir / f"input.{src}"],
        src,
        dst,
        REGISTRY.validate(conv.filetype, src, dst, {}),
        workdir,
        progress=progress.append,
    )
    # the job's environment as the sandbox sets it, but started from a folder outside the
    # workdir (the sandbox starts in it), which must stay empty
    for name, value in child.job_environment(workdir, isolated=False).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.chdir(outside_cwd)
    _WRITES.paths.clear()
    _WRITES.recording = True
    try:
        conv.check(task)
        result = conv.convert(task)
    finally:
        _WRITES.recording = False
    root = workdir.resolve()
    outside = sorted({str(p) for p in _WRITES.paths if not p.resolve().is_relative_to(root)})
    assert not outside, f"written outside the workdir: {outside}"
    assert not any(outside_cwd.iterdir()), f"left in the working directory: {list(outside_cwd.iterdir())}"
    assert result.path.resolve().is_relative_to(root) and result.path.is_file()
    assert progress, "no progress reported"
    assert all(isinstance(f, (int, float)) and 0.0 <= f <= 1.0 for f in progress), progress
