"""Test helpers for predict/evaluate: a tiny trained run folder on synthetic colour images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolbox import runs
from toolbox.images import write_image

# Three classes a tiny network learns in a few steps: the dominant colour of the picture.
COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}
SIZE = 32


def colour_image(name: str, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    """A noisy picture dominated by one colour (not exactly the model's input size)."""
    base = np.array(COLOURS[name], dtype=np.float32)
    noise = rng.normal(0, 40, size=(size, size + 8, 3))
    return np.clip(base * 0.7 + 40 + noise, 0, 255).astype(np.uint8)


def write_folder(root: Path, per_class: int, seed: int = 0,
                 classes: tuple[str, ...] = tuple(COLOURS)) -> Path:
    """An ImageFolder of PNGs: root/<colour>/<n>.png."""
    rng = np.random.default_rng(seed)
    for name in classes:
        for i in range(per_class):
            write_image(root / name / f"{i:03d}.png", colour_image(name, rng))
    return root


_CACHE: dict[str, Path] = {}


def shared_run(base: Path) -> Path:
    """One trained run per test session (read-only for tests; copy it to write into it)."""
    if "run" not in _CACHE:
        _CACHE["run"] = make_run(base / "run")
    return _CACHE["run"]


def make_run(run_dir: Path, steps: int = 20, seed: int = 0) -> Path:
    """Train `test_convnext3` briefly on colour images and save it as `tb finetune` does."""
    import torch

    from toolbox.models import ModelMeta, create_model, save_safetensors
    from toolbox.preprocess import eval_tensor

    torch.manual_seed(seed)
    names = sorted(COLOURS)
    meta = ModelMeta(model="test_convnext3", num_classes=len(names), class_names=names,
                     input_size=(3, SIZE, SIZE), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                     interpolation="bilinear", crop_pct=1.0)
    model = create_model(meta.model, num_classes=meta.num_classes)
    rng = np.random.default_rng(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        labels = rng.integers(0, len(names), size=12)
        batch = torch.stack([eval_tensor(colour_image(names[c], rng), meta) for c in labels])
        loss = torch.nn.functional.cross_entropy(model(batch), torch.as_tensor(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_safetensors(model, run_dir / runs.MODEL_FILE, meta)
    (run_dir / runs.ARGS_FILE).write_text(f"model: {meta.model}\n")
    return run_dir


# Folder label -> colours of the pictures in it. The model sees colours perfectly, so the
# confusion matrix is known: rows are folders, columns the colours (red -> green twice,
# blue -> red once).
MIXED = {"blue": ["blue"] * 4 + ["red"], "green": ["green"] * 3, "red": ["red"] * 4 + ["green"] * 2}


def mixed_folder(root: Path, layout: dict[str, list[str]] = MIXED) -> Path:
    """An ImageFolder whose label folders hold pictures of the colours `layout` names."""
    rng = np.random.default_rng(11)
    for label, colours in layout.items():
        for i, colour in enumerate(colours):
            write_image(root / label / f"{i:02d}.png", colour_image(colour, rng))
    return root


def run_copy(trained: Path, dest: Path) -> Path:
    """A private copy of a trained run's model, so a test reads only its own TensorBoard
    events and calibration files."""
    import shutil

    dest.mkdir(parents=True)
    shutil.copy(trained / runs.MODEL_FILE, dest / runs.MODEL_FILE)
    return dest
