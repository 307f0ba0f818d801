#!/usr/bin/env bash
# End to end with nothing but tb and Debian's dataset-fashion-mnist package:
# import the data set -> export a small ImageFolder -> augment it -> fine-tune -> summarise the
# model -> log images to TensorBoard -> evaluate -> predict a few images; then segmentation:
# garments pasted on canvases -> fine-tune a segmenter -> predict masks -> evaluate IoU/Dice.
#
#   examples/walkthrough.sh [WORK_DIR]        (default: ./walkthrough)
#
# Sizes are small so it runs in a few minutes on a laptop CPU; make them bigger with
#   PER_SPLIT=5000 EPOCHS=5 examples/walkthrough.sh   (or smaller: MODEL=resnet10t PER_SPLIT=200)
# Environment: FMNIST_DIR (Debian's files), PER_SPLIT (images exported per split), EPOCHS,
# MODEL, IMG_SIZE, SEG_COUNT (training canvases; a quarter as many for validation), SEG_SIZE
# (canvas side), TB (the tb program to run), PET=1 (with a network: step 9, Oxford-IIIT Pet,
# an 811 MB download).
set -euo pipefail

FMNIST_DIR=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
WORK=${1:-walkthrough}
PER_SPLIT=${PER_SPLIT:-500}
EPOCHS=${EPOCHS:-3}
MODEL=${MODEL:-resnet18}
IMG_SIZE=${IMG_SIZE:-32}
SEG_COUNT=${SEG_COUNT:-400}
SEG_SIZE=${SEG_SIZE:-64}
TB=${TB:-tb}

step() { printf '\n==> %s\n' "$*" >&2; }

if [ ! -d "$FMNIST_DIR" ]; then
  echo "no $FMNIST_DIR: install Debian's package (apt-get install dataset-fashion-mnist)" >&2
  echo "or set FMNIST_DIR to a folder with the four Fashion-MNIST .gz files" >&2
  exit 1
fi
mkdir -p "$WORK"

step "1. Import Fashion-MNIST from local files (verified, no download); export a subset as PNGs"
"$TB" datasets fetch fashion-mnist --root "$WORK/data" --from-dir "$FMNIST_DIR" \
  --export-folder "$WORK/fmnist" --export-max "$PER_SPLIT"

step "2. Augment the training images: one augmented copy each, originals kept"
"$TB" augment "$WORK/fmnist/train" "$WORK/dataset/train" --preset light --copies 1 \
  --include-original --seed 0 --preview "$WORK/augment-preview.png"
# The exported test split is the validation data: DIR/train + DIR/val is what finetune reads.
rm -rf "$WORK/dataset/val"
cp -r "$WORK/fmnist/test" "$WORK/dataset/val"

step "3. Fine-tune (short), with light augmentation on the fly too"
"$TB" finetune --data "$WORK/dataset" --augment light --model "$MODEL" --no-pretrained \
  --img-size "$IMG_SIZE" --epochs "$EPOCHS" --batch-size 64 --lr 0.003 --seed 0 \
  --out "$WORK/run"

step "4. Summarise the trained model (read from its file: classes and input size included)"
"$TB" summary "$WORK/run/model.safetensors" --depth 1 | tee "$WORK/summary.txt"

step "5. Log some validation images to the run's TensorBoard"
"$TB" log-images "$WORK/dataset/val" --logdir "$WORK/run" --tag val-images --max 32

step "6. Evaluate on the validation data (DIR/val): accuracy, per-class F1, confusion matrix"
"$TB" evaluate --run "$WORK/run" --data "$WORK/dataset" --out "$WORK/eval"

step "7. Predict a few images (a quoted glob: tb expands it)"
"$TB" predict "$WORK/fmnist/test/*/0000*.png" --run "$WORK/run" --topk 3 \
  --csv "$WORK/predictions.csv"

step "8. Segmentation: garments on ${SEG_SIZE}px canvases (binary masks), a segmenter, its masks"
"$TB" datasets fetch fashion-mnist --root "$WORK/data" --export-segmentation "$WORK/seg" \
  --binary --export-max "$SEG_COUNT" --canvas-size "$SEG_SIZE"
"$TB" finetune --task segment --data "$WORK/seg" --model "$MODEL" --no-pretrained \
  --img-size "$SEG_SIZE" --loss dice --epochs "$EPOCHS" --batch-size 32 --lr 0.003 --seed 0 \
  --out "$WORK/seg-run"
"$TB" predict "$WORK/seg/val/images/0000*.png" --run "$WORK/seg-run" --out "$WORK/seg-masks"
"$TB" evaluate --run "$WORK/seg-run" --data "$WORK/seg" --out "$WORK/seg-eval"

if [ "${PET:-0}" = 1 ]; then
  step "9. Real photos: Oxford-IIIT Pet (pet/background trimaps) as a segmentation folder"
  "$TB" datasets fetch oxford-iiit-pet --root "$WORK/data"
  "$TB" finetune --task segment --data "$WORK/data/oxford-iiit-pet/segmentation" \
    --model "$MODEL" --img-size 128 --loss ce+dice --epochs "$EPOCHS" --seed 0 \
    --out "$WORK/pet-run"
fi

step "Done. See it all in TensorBoard: tensorboard --logdir $WORK (both runs)"
