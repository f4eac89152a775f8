"""`convertd doctor`: which engines, sandbox layers, LibreOffice pool settings and fonts work here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.config import Settings


async def doctor(args: argparse.Namespace) -> None:
    import tempfile

    from converters.registry import registry
    from converters.sandbox import parent as sandbox
    from converters.sandbox import servers
    from converters.sandbox.failures import SandboxError

    reg = registry()
    for filetype, group in reg.formats().items():
        print(
            f"ok       {filetype}: {len(group['input_formats'])} input, "
            f"{len(group['output_formats'])} output formats"
        )
    missing = reg.unavailable()
    for name, reason in sorted(missing.items()):
        print(f"missing  {name}: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.txt"
        probe.write_text("convertd")
        try:
            await sandbox.run("hash", "txt", "txt", {}, [probe], Path(tmp) / "work")
        except SandboxError as exc:
            print(f"error    a test conversion failed: {exc.message} ({exc.detail.strip()[:200]})")
    from converters.sandbox import isolation

    layers = servers.layers or {}
    for name in isolation.LAYERS:
        state = "ok      " if layers.get(name) else "warning "
        print(f"{state} sandbox layer {name}: {isolation.LAYER_DESCRIPTIONS[name]}"
              + ("" if layers.get(name) else " -- NOT ACTIVE on this machine"))  # fmt: skip
    missing_layers = [name for name in isolation.LAYERS if not layers.get(name)]
    if servers.strict():
        print(
            "ok       CONVERTD_SANDBOX=strict: conversions are refused while a layer is missing"
            if not missing_layers
            else f"error    CONVERTD_SANDBOX=strict and {', '.join(missing_layers)} missing: "
            "every conversion is refused"
        )
    elif missing_layers:
        print("warning  conversions run without the layers above (CONVERTD_SANDBOX=strict would refuse)")
    from converters.tools import process

    if layers.get("mount") and layers.get("seccomp"):
        print("ok       LibreOffice and pandoc run inside each job's sandbox")
    elif process.isolation_used():
        print("ok       LibreOffice and pandoc run in their own namespaces (only /usr visible)")
    else:
        print("warning  LibreOffice and pandoc run without namespace isolation")
    _doctor_office_pool(Settings.from_env().queue.concurrency)
    _doctor_fonts()
    if reg.missing:  # a whole engine is gone; optional formats (calibre's) are only reported
        sys.exit(1)


def _doctor_fonts() -> None:
    """Which writing systems documents and SVGs can show, and the Office stand-ins."""
    from converters.tools import fonts

    for missing in fonts.missing_dirs():
        print(f"warning  {fonts.FONTS_ENV}: {missing} is not a folder; its fonts are not used")
    for folder in fonts.extra_dirs():
        print(f"ok       fonts: {folder} ({fonts.FONTS_ENV}) is used by LibreOffice, pandoc and SVG")
    cover = fonts.coverage()
    if cover.error:
        print(f"warning  fonts: cannot tell which scripts are covered: {cover.error}")
        return
    for name, families in cover.scripts.items():
        if families:
            more = f" and {len(families) - 1} more" if len(families) > 1 else ""
            print(f"ok       fonts: {name} script ({families[0]}{more})")
        else:
            print(f"warning  fonts: no font for the {name} script: its text comes out as empty boxes")
    for office_font, stand_in in cover.metric.items():
        if stand_in:
            print(f"ok       fonts: {office_font} laid out with {stand_in} (same metrics)")
        else:
            print(f"warning  fonts: no metric-compatible font for {office_font}: its documents change layout")
    if cover.missing_packages:
        print(f"warning  fonts: install the Debian packages {' '.join(cover.missing_packages)}")


def _doctor_office_pool(concurrency: int) -> None:
    from converters.tools.office import jail as office_jail
    from converters.tools.office import pool as office_pool

    try:
        settings, layers, error = office_pool.probe(concurrency)
    except ValueError as exc:  # a bad CONVERTD_OFFICE_* setting
        print(f"error    LibreOffice pool: {exc}")
        return
    modes = {
        "account": "an instance serves one account at a time, restarted before another",
        "none": "a fresh instance for every job",
        "all": "instances shared by all accounts: single-tenant deployments only",
    }
    if settings.instances == 0:
        print("warning  LibreOffice pool off (CONVERTD_OFFICE_INSTANCES=0): office jobs start soffice cold")
        return
    print(
        f"ok       LibreOffice pool: {settings.instances} warm instance(s) per worker, "
        f"reuse={settings.reuse} ({modes[settings.reuse]}), "
        f"restart after {settings.restart_after} conversions"
    )
    if error:
        print(f"warning  LibreOffice pool cannot start an instance: {error}")
        return
    for ok, text in office_jail.describe(settings.memory, layers):
        print(f"{'ok      ' if ok else 'warning '} LibreOffice instance: {text}")
