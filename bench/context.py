"""One benchmark run's settings and resources, handed to every section."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import write_config
from bench.db import PgDBs, SqliteDBs


@dataclass
class Ctx:
    quick: bool
    reps: int
    work: Path
    sqlite: SqliteDBs
    pg: PgDBs | None
    notes: list[str] = field(default_factory=list)
    _n: int = 0

    @property
    def backends(self) -> list[str]:
        return ["sqlite", "postgresql"] if self.pg is not None else ["sqlite"]

    def run_dir(self, name: str) -> Path:
        """A fresh directory for one process run: its config, console and JSONL logs."""
        self._n += 1
        safe = re.sub(r"[^\w.-]+", "-", name)
        path = self.work / f"{self._n:03d}-{safe}"
        path.mkdir(parents=True)
        return path

    def config(
        self,
        run_dir: Path,
        *,
        daemon: dict[str, Any] | None = None,
        log_level: str | None = None,
        extra: str = "",
    ) -> Path:
        return write_config(
            run_dir / "renewald.toml",
            log_dir=run_dir / "logs",
            daemon=daemon,
            log_level=log_level,
            extra=extra,
        )

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full
