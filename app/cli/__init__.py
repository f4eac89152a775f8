"""`convertd`: serve, worker, migrate, keys, plans, accounts, doctor; convert and formats (app/client/).

parser.py holds the command line and `main`; the commands live by what they do: service.py
(serve, worker, migrate, and the embedded servers they start), admin.py (keys, plans, accounts:
operator commands on the database), doctor.py (what works on this machine).
"""

from __future__ import annotations

from app.cli.parser import main

__all__ = ["main"]
