"""How a run shows its files: rich progress bars on a terminal, plain lines otherwise,
nothing but one JSON object per file with --json."""

from __future__ import annotations

import json
import sys
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn


class Display(Protocol):
    def __enter__(self) -> Display: ...
    def __exit__(self, *exc: object) -> None: ...
    def add(self, name: str) -> None: ...
    def update(self, name: str, state: str, fraction: float | None = None) -> None: ...
    def finish(self, name: str, result: dict[str, Any]) -> None: ...


class Bars:
    """One bar per file: name, state, percent, elapsed time."""

    def __init__(self, out: TextIO) -> None:
        self.console = Console(file=out)
        self.progress = Progress(
            TextColumn("{task.description}", style="bold"),
            TextColumn("{task.fields[state]:<11}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> Bars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def add(self, name: str) -> None:
        self.tasks[name] = self.progress.add_task(name, total=1.0, state="waiting")

    def update(self, name: str, state: str, fraction: float | None = None) -> None:
        changes: dict[str, Any] = {"state": state.lower()}
        if fraction is not None:
            changes["completed"] = fraction
        self.progress.update(self.tasks[name], **changes)

    def finish(self, name: str, result: dict[str, Any]) -> None:
        task = self.tasks[name]
        if result["ok"]:
            self.progress.update(task, state="done", completed=1.0)
            self.progress.console.print(f"[green]ok[/]     {name} -> {result['output']}")
            for note in result["notes"]:
                self.progress.console.print(f"       note: {note}", highlight=False)
        else:
            self.progress.update(task, state="failed")
            self.progress.console.print(f"[red]failed[/] {name}: {result['error']}", highlight=False)
            if result.get("hint"):
                self.progress.console.print(f"       hint: {result['hint']}", highlight=False)
        self.progress.stop_task(task)


class Lines:
    """A line when a file's state changes (progress in steps of a quarter): readable in
    logs and pipes, where bars would be noise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last: dict[str, tuple[str, int]] = {}

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def add(self, name: str) -> None:
        self.last[name] = ("", -1)

    def update(self, name: str, state: str, fraction: float | None = None) -> None:
        quarter = int((fraction or 0) * 4)
        if (state, quarter) == self.last.get(name):
            return
        self.last[name] = (state, quarter)
        pct = f" {round((fraction or 0) * 100)}%" if fraction is not None else ""
        print(f"{name}: {state.lower()}{pct}", file=self.out, flush=True)

    def finish(self, name: str, result: dict[str, Any]) -> None:
        if result["ok"]:
            print(f"{name}: done -> {result['output']}", file=self.out, flush=True)
            for note in result["notes"]:
                print(f"{name}: note: {note}", file=self.out, flush=True)
        else:
            print(f"{name}: failed: {result['error']}", file=self.out, flush=True)
            if result.get("hint"):
                print(f"{name}: hint: {result['hint']}", file=self.out, flush=True)


class JsonLines(Lines):
    """One JSON object per file, printed when it ends."""

    def update(self, name: str, state: str, fraction: float | None = None) -> None:
        pass

    def finish(self, name: str, result: dict[str, Any]) -> None:
        print(json.dumps(result), file=self.out, flush=True)


def display(as_json: bool, out: TextIO | None = None) -> Display:
    out = out or sys.stdout
    if as_json:
        return JsonLines(out)
    return Bars(out) if out.isatty() else Lines(out)
