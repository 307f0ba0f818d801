"""Oxford-IIIT Pet's verified archives turned into a tb segmentation folder (trimaps as masks).

The published `images.tar.gz` holds `images/<id>.jpg`; `annotations.tar.gz` holds the official
split lists `annotations/{trainval,test}.txt` and the trimaps `annotations/trimaps/<id>.png`
(1 = pet, 2 = background, 3 = the uncertain border). tb's layout wants masks with background 0,
so the trimaps are recoded to pet 1, background 0 and border 255 (ignored by every loss and
metric), and trainval/test become train/val.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolbox.datasets._extract import extract_archive
from toolbox.datasets._registry import DatasetInfo
from toolbox.datasets._verify import MANIFEST_DIR
from toolbox.errors import ToolboxError
from toolbox.fileio import atomic_folder, atomic_write_text, staging_dir
from toolbox.progress import Progress

PET_CLASSES = ("background", "pet")
SPLIT_LISTS = {"train": "trainval.txt", "val": "test.txt"}  # tb split -> official list
SEGMENTATION_DIR = "segmentation"
# trimap value -> tb class: 1 pet, 2 background, 3 border (ignored); anything else is ignored too
TRIMAP_TO_CLASS = np.full(256, 255, dtype=np.uint8)
TRIMAP_TO_CLASS[1], TRIMAP_TO_CLASS[2] = 1, 0


@dataclass
class SegmentationFolder:
    """A segmentation folder in tb's layout, ready for `tb finetune --task segment --data`."""

    dest: Path
    classes: list[str]
    counts: dict[str, int]  # image/mask pairs per split
    built: bool  # False: an earlier fetch had built it


def default_segmentation_dir(info: DatasetInfo, root: Path) -> Path:
    """Where a fetch puts the segmentation folder when no --export-segmentation DIR is given."""
    return Path(root) / info.folder / SEGMENTATION_DIR


def _split_ids(list_file: Path) -> list[str]:
    """Image ids of an official split list (`<id> <class> <species> <breed>` lines)."""
    ids = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            ids.append(line.split()[0])
    return ids


def _recode_trimap(src: Path, dest: Path) -> None:
    from toolbox.images import read_mask
    from toolbox.segment.overlay import write_palette_png

    write_palette_png(dest, TRIMAP_TO_CLASS[np.clip(read_mask(src), 0, 255)])


def _counts(dest: Path) -> dict[str, int]:
    from toolbox.segment import MASKS_DIR

    return {split: sum(1 for _ in (dest / split / MASKS_DIR).glob("*.png"))
            for split in SPLIT_LISTS}


def build_pet_segmentation(info: DatasetInfo, root: Path, dest: Path | None,
                           progress: Progress) -> SegmentationFolder:
    """Write `dest/{train,val}/{images,masks}/` and `dest/classes.txt` from the fetched archives.

    The archives are unpacked (with the path checks of every extraction) into a staging folder
    under the root, and the folder is renamed into place only when complete, so an interrupted
    build is simply redone by the next fetch. A complete default folder is reused as it is.

    Raises:
        ToolboxError: an archive lacks the official layout, or `dest` is a non-empty folder.
    """
    from toolbox.segment import CLASSES_FILE, IMAGES_DIR, MASKS_DIR

    root = Path(root)
    default = default_segmentation_dir(info, root)
    dest = Path(dest) if dest is not None else default
    if dest == default and (dest / CLASSES_FILE).is_file():
        return SegmentationFolder(dest, list(PET_CLASSES), _counts(dest), built=False)
    work = staging_dir(root / MANIFEST_DIR / "staging", f"{info.name}-")
    try:
        for rf in info.files:
            progress.note(f"unpacking {rf.filename}")
            extract_archive(root / rf.members[0].path, work)
        lists = {split: work / "annotations" / name for split, name in SPLIT_LISTS.items()}
        missing = [p for p in (*lists.values(), work / "images", work / "annotations" / "trimaps")
                   if not p.exists()]
        if missing:
            raise ToolboxError(
                f"the {info.title} archives lack {missing[0].relative_to(work)}",
                "they are not the published images.tar.gz and annotations.tar.gz")
        counts = {}
        with atomic_folder(dest) as stage:
            for split, list_file in lists.items():
                ids = _split_ids(list_file)
                progress.start(f"{info.name} {split} masks", len(ids), unit="images")
                for image_id in ids:
                    image = work / "images" / f"{image_id}.jpg"
                    trimap = work / "annotations" / "trimaps" / f"{image_id}.png"
                    if not image.is_file() or not trimap.is_file():
                        raise ToolboxError(
                            f"{list_file.name} names {image_id}, which the archives lack",
                            "the archives are not the published ones; fetch them again")
                    (stage / split / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
                    shutil.move(image, stage / split / IMAGES_DIR / image.name)
                    _recode_trimap(trimap, stage / split / MASKS_DIR / f"{image_id}.png")
                    progress.advance()
                progress.finish()
                counts[split] = len(ids)
            atomic_write_text(stage / CLASSES_FILE, "\n".join(PET_CLASSES) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return SegmentationFolder(dest, list(PET_CLASSES), counts, built=True)
