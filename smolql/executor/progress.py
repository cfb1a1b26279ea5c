"""A progress bar that shows, per node, the images it answered and its images/s."""

from __future__ import annotations

import sys
import time
from types import TracebackType

from tqdm import tqdm


class NodeProgress:
    """``update(node, images, seconds)`` per answered chunk; the bar's postfix lists each
    node's images/s over the wall time so far."""

    def __init__(self, total: int, what: str, show: bool | None) -> None:
        show = sys.stderr.isatty() if show is None else show
        self.bar = tqdm(total=total, unit="img", desc=f"classify {what}", disable=not show)
        self.start = time.perf_counter()
        self.images: dict[str, int] = {}

    def update(self, node: str, images: int, seconds: float) -> None:
        self.images[node] = self.images.get(node, 0) + images
        wall = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(
            " ".join(f"{n}: {c / wall:.0f}/s" for n, c in sorted(self.images.items())),
            refresh=False,
        )
        self.bar.update(images)

    def __enter__(self) -> NodeProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bar.close()
