"""A run folder: what training and pre-training keep between sessions, and how a run resumes.

``config.json`` holds the run's settings (written when the run starts; ``--resume`` reads them
back and may raise the budget in it), ``state.pt`` the model, optimizer and schedule (and any
other module, e.g. a projection head) after the last checkpoint, ``log.csv`` one row per
validation, ``summary.json`` the end result. Every file but the log (appended to) is replaced
atomically, so a run killed at any moment resumes from its last checkpoint.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from audiosheet.files import atomic_path, write_json
from audiosheet.models.checkpoint import load_state


class RunFolder:
    """The files of one run in folder ``path``; ``error``: the exception class for a run that
    cannot start (nothing to resume, or a run already there)."""

    def __init__(self, path: str | Path, error: type[Exception] = ValueError):
        self.path = Path(path)
        self.error = error
        self.config = self.path / "config.json"
        self.state = self.path / "state.pt"
        self.log = self.path / "log.csv"
        self.summary = self.path / "summary.json"

    def saved_config(self) -> dict:
        """The settings of the run to resume; ``error`` if there is none."""
        if not self.config.is_file():
            raise self.error(f"{self.path}: nothing to resume (no config.json)")
        return json.loads(self.config.read_text())

    def check_new(self) -> None:
        """``error`` if a run already exists here (a new run must not overwrite it)."""
        if self.state.exists():
            raise self.error(f"{self.path}: a run already exists here (use --resume, or another --out)")

    def write_config(self, config: dict) -> None:
        """Write the run's settings (making the folder)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.config, config)

    def load_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: dict,
                   **modules: torch.nn.Module) -> bool:
        """Restore ``model``, ``optimizer``, the ``schedule`` dict (updated in place) and the other
        ``modules`` (by name) from state.pt; False where the run has none yet."""
        if not self.state.is_file():
            return False
        ck = torch.load(self.state, map_location="cpu", weights_only=False)
        load_state(model, ck["model"], self.state)
        for name, module in modules.items():
            module.load_state_dict(ck[name])
        optimizer.load_state_dict(ck["optimizer"])
        schedule.update(ck["schedule"])
        return True

    def save_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: dict,
                   **modules: torch.nn.Module) -> None:
        """Write state.pt: the model's floating-point tensors, the other ``modules``, the
        optimizer and the schedule."""
        state = {"model": {k: v for k, v in model.state_dict().items() if v.is_floating_point()},
                 **{name: module.state_dict() for name, module in modules.items()},
                 "optimizer": optimizer.state_dict(), "schedule": schedule}
        with atomic_path(self.state) as tmp:
            torch.save(state, tmp)

    def start_log(self, columns) -> None:
        """Create log.csv with its header row, unless the run has one already."""
        if not self.log.exists():
            with self.log.open("w", newline="") as f:
                csv.writer(f).writerow(columns)

    def log_row(self, row) -> None:
        """Append one row to log.csv."""
        with self.log.open("a", newline="") as f:
            csv.writer(f).writerow(row)

    def write_summary(self, summary: dict) -> None:
        write_json(self.summary, summary)
