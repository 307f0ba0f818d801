"""The one TensorBoard writer helper: opening a log dir and adding image grids.

Images cross this module as (H, W, 3) uint8 arrays, the shape `toolbox.images` reads.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch.utils.tensorboard import SummaryWriter


def tensorboard_command(logdir: str | Path) -> str:
    """The exact shell command that shows `logdir` (quoted, so paths with spaces work)."""
    return f"tensorboard --logdir {shlex.quote(str(logdir))}"


@contextmanager
def summary_writer(logdir: str | Path) -> Iterator[SummaryWriter]:
    """A SummaryWriter on `logdir` that is flushed and closed however the block ends."""
    from torch.utils.tensorboard import SummaryWriter

    Path(logdir).mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(log_dir=str(logdir))
    try:
        yield writer
    finally:
        writer.flush()
        writer.close()


def to_chw(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (3, H, W) uint8 tensor."""
    import torch

    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def fit_to_size(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to fit inside (H, W) keeping the aspect ratio, then pad with black to exactly it.

    This is how images of mixed sizes become one batch or one grid: nothing is cropped away.
    """
    import numpy as np
    import torch
    from torchvision.transforms.v2 import functional as F

    height, width = size
    h, w = image.shape[:2]
    scale = min(height / h, width / w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    tensor = to_chw(image)
    if (new_h, new_w) != (h, w):
        tensor = F.resize(tensor, [new_h, new_w], antialias=True)
    canvas = torch.zeros((3, height, width), dtype=torch.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[:, top:top + new_h, left:left + new_w] = tensor
    return np.ascontiguousarray(canvas.permute(1, 2, 0).numpy())


def image_grid(images: Sequence[np.ndarray], nrow: int = 8, padding: int = 2,
               size: tuple[int, int] | None = None) -> np.ndarray:
    """Tile images with `torchvision.utils.make_grid`; mixed sizes are fitted to `size`
    (default: the first image's size). Returns an (H, W, 3) uint8 array."""
    import numpy as np
    import torch
    from torchvision.utils import make_grid

    if not images:
        raise ValueError("no images to put in a grid")
    size = size or images[0].shape[:2]
    batch = torch.stack([to_chw(fit_to_size(img, size)) for img in images])
    grid = make_grid(batch, nrow=nrow, padding=padding)
    return np.ascontiguousarray(grid.permute(1, 2, 0).numpy())


def add_image(writer: SummaryWriter, tag: str, image: np.ndarray, step: int = 0) -> None:
    """Add one (H, W, 3) uint8 image."""
    writer.add_image(tag, image, global_step=step, dataformats="HWC")
