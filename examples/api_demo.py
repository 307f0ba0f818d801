"""tb's Python API without the command line: a loss, a frozen backbone, an augmentation run.

    python examples/api_demo.py [WORK_DIR]      (default: ./api-demo)

1. `toolbox.losses.DiceLoss` on classification and segmentation logits, with gradients.
2. A model with a new 3-class head and a frozen backbone: one optimizer step changes only the
   head (what `tb finetune --freeze` does).
3. An imgaug pipeline from a spec, used in memory and run over a folder (what `tb augment` does).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from toolbox.augment import augment_folder, build_augmenter
from toolbox.images import collect_images, read_image, write_image
from toolbox.losses import DiceLoss
from toolbox.models import classifier_name, create_model
from toolbox.train.modeling import parameter_counts, set_frozen, train_mode


def dice_demo() -> None:
    dice = DiceLoss(smooth=1.0)
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]], requires_grad=True)
    targets = torch.tensor([0, 1])
    loss = dice(logits, targets)  # (N, C) classification logits
    loss.backward()
    print(f"Dice loss, classification: {loss.item():.4f}; "
          f"grad norm {logits.grad.norm().item():.4f}")
    seg_logits = torch.randn(2, 4, 8, 8) * 20  # (N, C, H, W) segmentation logits, confident
    seg_targets = seg_logits.argmax(dim=1)  # targets the logits get right: the loss is near 0
    print(f"Dice loss, segmentation (confident and right): "
          f"{dice(seg_logits, seg_targets).item():.4f}; "
          f"(random targets): {dice(seg_logits, torch.randint(0, 4, (2, 8, 8))).item():.4f}")


def frozen_backbone_demo() -> None:
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3)  # pretrained=True needs the hub or a cache
    head = classifier_name(model)
    set_frozen(model, head, frozen=True)
    total, trainable, frozen = parameter_counts(model)
    print(f"resnet18 with a 3-class head '{head}': {total:,} parameters, "
          f"{trainable:,} trainable, {frozen:,} frozen")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    train_mode(model, head)  # frozen BatchNorm layers keep their running statistics
    images, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    changed = sorted({name.rsplit(".", 1)[0] for name, p in model.named_parameters()
                      if not torch.equal(p, before[name])})
    print(f"after one step only these layers changed: {', '.join(changed)}")


def augment_demo(work: Path) -> None:
    src = work / "images"
    rng = np.random.default_rng(0)
    for name in ("stripes", "blocks"):
        for i in range(3):
            image = np.zeros((64, 64, 3), np.uint8)
            if name == "stripes":
                image[:, ::8] = rng.integers(100, 256, 3)
            else:
                image[16:48, 16:48] = rng.integers(100, 256, 3)
            write_image(src / name / f"{i}.png", image)
    spec = "Fliplr(0.5); Affine(rotate=(-25, 25)); Sometimes(0.5, GaussianBlur(sigma=(0, 1.5)))"
    augmenter = build_augmenter(spec, seed=0)
    batch = np.stack([read_image(f.path) for f in collect_images(src)])
    augmented = augmenter(images=batch)  # in memory, the imgaug way
    print(f"augmented a batch in memory: {batch.shape} -> {augmented.shape}")
    # The same runner `tb augment` uses, here with a pipeline file from examples/pipelines/.
    pipeline = Path(__file__).resolve().parent / "pipelines" / "light.yaml"
    report = augment_folder(src, work / "augmented", spec=pipeline, seed=0, copies=2, workers=1)
    print(f"augment_folder: {report.images_read} read, {report.images_written} written to "
          f"{report.out} (pipeline recorded in {report.pipeline_file})")


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "api-demo")
    dice_demo()
    frozen_backbone_demo()
    augment_demo(work)


if __name__ == "__main__":
    main()
