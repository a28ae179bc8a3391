"""Per-stage timing reports: seconds per stage that ran, plus their total.

A stage that did not run is absent from the report (not 0.0), so a report says what happened: `load` appears only
when weights were read, `stitching` only when heavy blocks were blended. On CUDA the timer waits for the GPU at
each stage boundary, so a stage measures its kernels rather than their launches.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Mapping


class StageTimer:
    """Accumulates seconds per stage in the order stages first ran."""

    def __init__(self, sync_cuda: bool = False) -> None:
        self.sync_cuda = sync_cuda
        self.seconds: dict[str, float] = {}

    def now(self) -> float:
        if self.sync_cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def merge(self, report: Mapping[str, float], prefix: str = "") -> None:
        """Add another report's stages (its 'total' left out: the total is recomputed)."""
        for stage, seconds in report.items():
            if stage != "total":
                self.add(prefix + stage, seconds)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = self.now()
        try:
            yield
        finally:
            self.add(name, self.now() - start)

    def report(self) -> dict[str, float]:
        """{stage: seconds} for every stage that ran, then 'total'."""
        return {**self.seconds, "total": sum(self.seconds.values())}


__all__ = ["StageTimer"]
