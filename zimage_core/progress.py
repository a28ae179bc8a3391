"""Terminal progress bars for the command line (tqdm on stderr): denoising steps, heavy blocks, VAE tiles.

Off when stderr is not a terminal or with --quiet, so logs and pipes stay clean; the callbacks still accept calls
then and do nothing.
"""

from __future__ import annotations

from typing import Any, Callable


class ProgressBars:
    """One bar per kind of work, created on its first report and closed when the work is done or on exit."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bars: dict[str, Any] = {}

    def _bar(self, label: str, total: int):
        bar = self._bars.get(label)
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            from tqdm import tqdm

            bar = self._bars[label] = tqdm(total=total, desc=label, unit="", leave=False, dynamic_ncols=True)
        return bar

    def update(self, label: str, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        bar = self._bar(label, total)
        bar.update(max(0, done - bar.n))
        if done >= total:
            bar.close()
            del self._bars[label]

    def steps(self, info: Any) -> None:
        """A sampler StepInfo callback (step counts run across the batch and hi-res passes)."""
        self.update("denoise", info.step, info.total)

    def counter(self, label: str) -> Callable[[int, int], None]:
        """A (done, total) callback for `label`."""
        return lambda done, total: self.update(label, done, total)

    def __enter__(self) -> "ProgressBars":
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


__all__ = ["ProgressBars"]
