"""Tiny test harness shared by the client tests: PASS/FAIL/SKIP lines that scripts/test.sh counts."""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[3]
PHOTOS = Path(os.environ.get("PG_IMGSIM_PHOTOS", ROOT / ".cache/data/gcompris"))
MODEL = os.environ.get("PG_IMGSIM_MODEL", "efficientnet_lite0")
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


class Report:
    def __init__(self, prefix: str):
        self.prefix = prefix
        self.fails = 0

    def ok(self, name: str) -> None:
        print(f"PASS {self.prefix}: {name}", flush=True)

    def fail(self, name: str, why: str) -> None:
        self.fails += 1
        print(f"FAIL {self.prefix}: {name}: {why}", flush=True)

    def skip(self, name: str, why: str) -> None:
        print(f"SKIP {self.prefix}: {name}: {why}", flush=True)

    def check(self, name: str, cond: bool, why: str = "") -> bool:
        if cond:
            self.ok(name)
        else:
            self.fail(name, why or "condition false")
        return bool(cond)

    def run(self, name: str, fn: Callable[[], object]) -> None:
        """Runs fn; a returned string is a failure reason, an exception a failure, None a pass."""
        try:
            why = fn()
        except Exception as e:  # noqa: BLE001 - any exception is a test failure
            tb = traceback.format_exc().strip().splitlines()
            self.fail(name, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                      f" [{tb[-3].strip() if len(tb) >= 3 else ''}]")
            return
        if why:
            self.fail(name, str(why))
        else:
            self.ok(name)

    def exit(self) -> None:
        sys.exit(1 if self.fails else 0)


def connect_retry(connect: Callable[[], object], tries: int = 10):
    """CREATE EXTENSION may fail for a moment while the extension is being reinstalled: retry."""
    last: Exception | None = None
    for _ in range(tries):
        try:
            return connect()
        except Exception as e:  # noqa: BLE001
            last = e
            time.sleep(3)
    raise last  # type: ignore[misc]


def gcompris_split(per_class_held_out: int = 1):
    """(loaded, held_out): lists of (class, path); the first file(s) of each class (sorted) are held out."""
    loaded, held = [], []
    if not PHOTOS.is_dir():
        return loaded, held
    for cdir in sorted(p for p in PHOTOS.iterdir() if p.is_dir()):
        files = sorted(p for p in cdir.rglob("*") if p.suffix.lower() in IMAGE_EXT)
        held += [(cdir.name, p) for p in files[:per_class_held_out]]
        loaded += [(cdir.name, p) for p in files[per_class_held_out:]]
    return loaded, held
