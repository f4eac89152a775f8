"""scripts/licenses.py: the CI check that no GPL or AGPL package is installed.

Fake installed packages are written as .dist-info folders (METADATA, RECORD and licence
files, as pip leaves them) and the script is run on them as CI runs it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "licenses.py"
_spec = importlib.util.spec_from_file_location("licenses", SCRIPT)
assert _spec and _spec.loader
licenses = importlib.util.module_from_spec(_spec)
sys.modules["licenses"] = licenses  # dataclasses look their module up there
_spec.loader.exec_module(licenses)


Headers = dict[str, str | list[str]]


def fake_dist(site: Path, name: str, headers: Headers, files: dict[str, str] | None = None) -> None:
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.4", f"Name: {name}", "Version: 1.0"]
    for key, value in headers.items():
        lines += [f"{key}: {v}" for v in (value if isinstance(value, list) else [value])]
    (info / "METADATA").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    record = [f"{info.name}/METADATA,,"]
    for rel, text in (files or {}).items():
        path = info / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        record.append(f"{info.name}/{rel},,")
    (info / "RECORD").write_text("\n".join([*record, f"{info.name}/RECORD,,"]) + "\n", encoding="utf-8")


def run_check(site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--path", str(site)],
                          capture_output=True, text=True, check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("expression", "allowed"),
    [
        ("MIT", True),
        ("Apache-2.0 AND MIT", True),
        ("LGPL-2.1-or-later", True),
        ("LGPL-3.0-only OR MPL-2.0", True),
        ("GPL-3.0-or-later", False),
        ("AGPL-3.0-only", False),
        ("MIT OR GPL-2.0-only", True),  # we take the MIT branch
        ("MIT AND GPL-2.0-only", False),
        ("(MIT OR GPL-2.0-only) AND BSD-3-Clause", True),
        ("GPL-2.0-or-later WITH Classpath-exception-2.0", False),
        ("BSD-3-Clause AND (AGPL-3.0-only OR LicenseRef-Commercial)", True),
    ],
)
def test_spdx_expressions(expression: str, allowed: bool) -> None:
    assert licenses.spdx_allowed(expression) is allowed


def test_permissive_and_lgpl_packages_pass(tmp_path: Path) -> None:
    fake_dist(tmp_path, "fine-mit", {"License-Expression": "MIT"})
    fake_dist(tmp_path, "fine-lgpl", {"Classifier": "License :: OSI Approved :: GNU Lesser General "
                                      "Public License v3 (LGPLv3)"})  # fmt: skip
    fake_dist(tmp_path, "fine-library", {"License": "GNU Library or Lesser General Public License (LGPL)"})
    bundled = 'License for "x" binary wheels: LGPLv3, due to libheif.\n'
    fake_dist(tmp_path, "fine-lgpl-wheel", {"License": "BSD-3-Clause"},
              {"licenses/LICENSES_bundled.txt": bundled})  # fmt: skip
    fake_dist(tmp_path, "fine-file", {}, {"licenses/LICENSE": "MIT License\n\nPermission is hereby "
                                          "granted, free of charge, to any person"})  # fmt: skip
    done = run_check(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "5 installed packages, none under the GPL or AGPL" in done.stdout


@pytest.mark.parametrize(
    ("name", "headers", "files", "shown"),
    [
        ("gpl-expression", {"License-Expression": "GPL-3.0-or-later"}, None, "GPL-3.0-or-later"),
        ("agpl-dual", {"License": "Dual Licensed - GNU AFFERO GPL 3.0 or Artifex Commercial License"},
         None, "GNU AFFERO GPL 3.0"),
        ("gpl-classifier", {"License": "", "Classifier": [
            "License :: OSI Approved :: GNU General Public License v2 (GPLv2)"]}, None, "GPLv2"),
        ("gpl-wheel", {"License": "BSD-3-Clause"},
         {"licenses/LICENSES_bundled.txt": 'License for "gpl-wheel" binary wheels: GPLv2, due to x265.\n'},
         "binary wheel: GPLv2"),
        ("gpl-file-only", {}, {"LICENSE": "    GNU GENERAL PUBLIC LICENSE\n    Version 3, 29 June 2007\n"},
         "GPL (from its licence file)"),
        ("gpl-inside", {"License-Expression": "BSD-3-Clause"}, {"../gpl_inside.libs/libx265-1a2b.so.216": ""},
         "bundles x265, GPL-2.0-or-later (libx265-1a2b.so.216)"),
    ],
)  # fmt: skip
def test_gpl_and_agpl_packages_fail_by_name_and_licence(
    name: str, headers: dict, files: dict | None, shown: str, tmp_path: Path
) -> None:
    fake_dist(tmp_path, "fine", {"License-Expression": "MIT"})
    fake_dist(tmp_path, name, headers, files)
    done = run_check(tmp_path)
    assert done.returncode == 1
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("  ")]
    assert line.startswith(f"  {name} 1.0: ") and shown in line
    assert "fine" not in done.stderr.split(":", 1)[1].split("\n", 1)[1]


def test_this_environment_passes() -> None:
    # what CI runs before pytest; here so that a local run of the suite says it too
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_pyav_bundling_x264_is_refused(tmp_path: Path) -> None:
    # it was tolerated until media were probed with the ffprobe program: it may not come back
    fake_dist(tmp_path, "av", {"License-Expression": "BSD-3-Clause"}, {"../av.libs/libx264-0f.so.165": ""})
    done = run_check(tmp_path)
    assert done.returncode == 1
    assert "av 1.0: BSD-3-Clause  [bundles x264" in done.stderr, done.stderr


def test_reviewed_exception_passes_with_a_warning(tmp_path: Path, monkeypatch, capsys) -> None:
    fake_dist(tmp_path, "pkg", {"License-Expression": "MIT"}, {"../pkg.libs/libx265-1a.so.199": ""})
    monkeypatch.setattr(licenses, "ALLOWED", {"pkg": "reviewed: only a separate program uses it"})
    assert licenses.main(["--path", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "warning: pkg 1.0: bundles x265" in err and "Tolerated: reviewed: only" in err
