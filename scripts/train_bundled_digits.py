#!/usr/bin/env python
"""Train the tiny CLIP model that ships inside synthguard as ``bundled:digits``.

What:
    A small open_clip ``CLIP`` (ViT image tower + transformer text tower with the standard
    49,408-token CLIP BPE vocabulary) trained contrastively from scratch on the *train split*
    of scikit-learn's 8×8 handwritten digits (1,257 images, :func:`synthguard.datasets.load_digits`)
    paired with short captions drawn from :data:`synthguard.datasets.CAPTION_TEMPLATES`
    ("a handwritten seven", "the digit 7 written in ink", ...). The output folder is a normal
    open_clip ``local-dir:`` model: ``open_clip_config.json`` + ``open_clip_model.safetensors``.

Why:
    synthguard must work fully offline (tests, examples, ``synthguard demo``), so it needs a real
    image/text encoder pair that needs no download. This model is only meant for that: it embeds
    8×8 digit images and digit captions, nothing else.

How it trains:
    * Every step draws a batch of training images (without replacement within an epoch), applies a
      light random affine (±1 px shift, ±10° rotation, 0.9-1.1 scale, p=0.8) to the 8×8 PIL image,
      converts it to RGB and then applies *exactly* the open_clip inference transform that the
      shipped ``preprocess_cfg`` defines (bicubic resize to ``image_size``, centre crop, ToTensor,
      normalise with the config's mean/std). Inference therefore sees the same preprocessing.
    * Every step also draws a fresh caption per image from the templates, so the text tower
      learns that all phrasings (word or numeral) of a digit mean the same thing.
    * Loss: symmetric InfoNCE with a learnable logit scale (clamped to <= 100, as in CLIP), but
      with *supervised-contrastive targets*. With only ten classes, a batch of 128 holds ~13 images
      of each digit, so the usual "only the diagonal is positive" targets would push apart
      image/caption pairs that are in fact correct matches (false negatives) and make the loss
      fight itself. Instead the target row of image ``i`` is uniform over every caption in the
      batch with the same label (and vice versa for captions). This keeps in-batch negatives (all
      other digits) while never penalising a correct match, and it pulls all templates of one
      digit onto the same text embedding, which is what zero-shot classification needs.
    * AdamW (no weight decay on gains, biases, embeddings, logit scale), linear warm-up then
      cosine decay.

Determinism:
    numpy/torch are seeded from ``--seed``, ``torch.use_deterministic_algorithms(True)`` is on, the
    number of CPU threads is fixed (``--threads``, default 1); weight init uses the seeded torch
    RNG and all data randomness (batch order, captions, augmentation) one seeded
    ``numpy.random.Generator``. Two runs with the same
    arguments on the same machine/library versions write byte-identical weights
    (``tests/test_bundled_digits_model.py`` checks this for a 5-step run). Other CPUs or library
    versions may differ in the last bits of floating point.

Rerun (from the repository root; ~3 minutes on one CPU thread, 1,500 steps of 128)::

    .venv/bin/python scripts/train_bundled_digits.py

    # options: --out DIR  --steps N  --batch-size B  --seed S  --threads T  --no-eval  --fp32

At the end the script reloads the written folder through
``open_clip.create_model_and_transforms("local-dir:<out>")`` and prints, on the held-out test split
(540 images): zero-shot accuracy with the prompt ``"a handwritten digit {name}"`` and, for every
caption template, the accuracy and mean cosine of the correct caption vs the wrong ones.

Weights are stored as float16 (halves the folder; open_clip loads them into its float32 model via
``load_state_dict``, which casts) unless ``--fp32``. The reported metrics are those of the stored
(float16) weights as loaded back by open_clip.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "src") not in sys.path:  # allow running without an installed package
    sys.path.insert(0, str(REPO_ROOT / "src"))

import open_clip  # noqa: E402
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from synthguard.datasets import (  # noqa: E402
    CAPTION_TEMPLATES,
    DIGIT_NAMES,
    digit_caption,
    load_digits,
)

DEFAULT_OUT = REPO_ROOT / "src" / "synthguard" / "encoders" / "_bundled" / "digits"
ZERO_SHOT_PROMPT = "a handwritten digit {name}"
#: Phrasings that are *not* training templates, evaluated as a generalisation diagnostic only.
UNSEEN_PROMPTS = ("{name}", "{digit}", "a picture of a {name}", "the handwritten numeral {digit}")
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"

#: Architecture. The text tower's 49,408×width token table dominates the size
#: (49,408 × 64 × 2 bytes ≈ 6.3 MB in float16).
MODEL_CFG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 16,
        "patch_size": 4,
        "width": 64,
        "layers": 3,
        "head_width": 32,
        "mlp_ratio": 2.0,
    },
    "text_cfg": {
        "context_length": 16,
        "vocab_size": 49408,
        "width": 64,
        "heads": 2,
        "layers": 2,
        "mlp_ratio": 2.0,
    },
}

#: Inference preprocessing. Mean/std are those of the bicubic-upscaled training images
#: (grayscale replicated into three channels), rounded.
PREPROCESS_CFG: dict[str, Any] = {
    "size": MODEL_CFG["vision_cfg"]["image_size"],
    "mode": "RGB",
    "mean": [0.31, 0.31, 0.31],
    "std": [0.35, 0.35, 0.35],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
    "fill_color": 0,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (local-dir model)")
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (fixed for determinism)"
    )
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    p.add_argument("--fp32", action="store_true", help="store float32 weights (default float16)")
    p.add_argument("--quiet", action="store_true", help="only print the final summary")
    return p.parse_args(argv)


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def full_config(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON written next to the weights (open_clip reads ``model_cfg``/``preprocess_cfg``)."""
    return {
        "model_cfg": MODEL_CFG,
        "preprocess_cfg": PREPROCESS_CFG,
        "synthguard": {
            "name": "digits",
            "description": "tiny CLIP trained on the sklearn 8x8 digits train split",
            "zero_shot_prompt": ZERO_SHOT_PROMPT,
            "class_names": list(DIGIT_NAMES),
            "caption_templates": list(CAPTION_TEMPLATES),
            "train_data": "synthguard.datasets.load_digits('train') (1,257 images)",
            "training": {
                "script": "scripts/train_bundled_digits.py",
                "steps": args.steps,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "weight_decay": args.weight_decay,
                "warmup": args.warmup,
                "seed": args.seed,
                "threads": args.threads,
                "weights_dtype": "float32" if args.fp32 else "float16",
                "torch": torch.__version__,
                "open_clip": open_clip.__version__,
            },
        },
    }


def build_preprocess() -> Callable[[Image.Image], torch.Tensor]:
    """The open_clip inference transform exactly as ``create_model_and_transforms`` builds it."""
    cfg = merge_preprocess_dict(asdict(PreprocessCfg()), PREPROCESS_CFG)
    size = MODEL_CFG["vision_cfg"]["image_size"]
    cfg["size"] = (size, size)  # create_model sets size from model.visual.image_size (a 2-tuple)
    transform: Callable[[Image.Image], torch.Tensor] = image_transform_v2(
        PreprocessCfg(**cfg), is_train=False
    )
    return transform


def augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Light random affine on the 8×8 image (p=0.8): shift ±1 px, rotate ±10°, scale 0.9-1.1."""
    if rng.random() >= 0.8:
        return image
    angle = float(rng.uniform(-10.0, 10.0))
    dx, dy = (int(v) for v in rng.integers(-1, 2, size=2))
    scale = float(rng.uniform(0.9, 1.1))
    # Inverse affine about the image centre, for PIL's Image.transform (which samples at pixel
    # centres, so the centre of an 8-px image is 4.0).
    cx, cy = image.width / 2.0, image.height / 2.0
    a = math.radians(angle)
    cos_a, sin_a = math.cos(a) / scale, math.sin(a) / scale
    # output (x, y) samples input (cos*(x-cx-dx) + sin*(y-cy-dy) + cx, -sin*(...) + cos*(...) + cy)
    coeffs = (
        cos_a,
        sin_a,
        cx - cos_a * (cx + dx) - sin_a * (cy + dy),
        -sin_a,
        cos_a,
        cy + sin_a * (cx + dx) - cos_a * (cy + dy),
    )
    return image.transform(
        image.size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR, fillcolor=0
    )


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        # gains, biases, logit scale (ndim < 2) and token/positional/class embeddings
        if param.ndim < 2 or "embedding" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def supcon_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """Symmetric InfoNCE where every same-label pair in the batch counts as a positive."""
    logits = logit_scale.exp() * image_features @ text_features.T
    same = (labels[:, None] == labels[None, :]).to(logits.dtype)
    targets = same / same.sum(dim=1, keepdim=True)  # symmetric ``same`` -> also the text targets
    loss_i2t = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss_t2i = -(targets * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (loss_i2t + loss_t2i) / 2


def lr_at(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train(args: argparse.Namespace) -> open_clip.CLIP:
    seed_everything(args.seed, args.threads)
    rng = np.random.default_rng(args.seed)
    data = load_digits("train")
    preprocess = build_preprocess()
    tokenizer = open_clip.SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
    token_cache: dict[str, torch.Tensor] = {}

    def tokens(captions: list[str]) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in token_cache]
        if missing:
            token_cache.update(zip(missing, tokenizer(missing), strict=True))
        return torch.stack([token_cache[c] for c in captions])

    model = open_clip.CLIP(**MODEL_CFG)
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr)
    n = len(data)
    n_params = sum(p.numel() for p in model.parameters())
    if not args.quiet:
        print(f"train images: {n}; parameters: {n_params:,}; steps: {args.steps}", flush=True)

    order = rng.permutation(n)
    cursor, epoch = 0, 0
    epoch_losses: list[float] = []
    start = time.perf_counter()
    for step in range(args.steps):
        if cursor + args.batch_size > n:  # new epoch: reshuffle (drop the ragged tail)
            if epoch_losses and not args.quiet:
                print(
                    f"epoch {epoch:3d}  step {step:5d}  loss {np.mean(epoch_losses):.4f}  "
                    f"logit_scale {model.logit_scale.exp().item():6.2f}  "
                    f"{time.perf_counter() - start:6.1f}s",
                    flush=True,
                )
            order, cursor, epoch, epoch_losses = rng.permutation(n), 0, epoch + 1, []
        idx = order[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        labels = data.labels[idx]
        images = torch.stack([preprocess(augment(data.images[i], rng).convert("RGB")) for i in idx])
        text = tokens([digit_caption(int(label), rng) for label in labels])

        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args)
        image_features, text_features, _ = model(images, text)
        loss = supcon_clip_loss(
            image_features, text_features, torch.from_numpy(labels), model.logit_scale
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        epoch_losses.append(loss.item())
    if epoch_losses and not args.quiet:
        print(f"epoch {epoch:3d}  step {args.steps:5d}  loss {np.mean(epoch_losses):.4f}  (last)")
    if not args.quiet:
        print(f"training took {time.perf_counter() - start:.1f}s", flush=True)
    model.eval()
    return model


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write via a hidden temp file in the same folder, fsync, then ``os.replace`` onto ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; shipped package data must be readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(model: torch.nn.Module, args: argparse.Namespace) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    dtype = torch.float32 if args.fp32 else torch.float16
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    config_text = json.dumps(full_config(args), indent=2) + "\n"

    def write_config(tmp: str) -> None:
        Path(tmp).write_text(config_text, encoding="utf-8")

    # Weights first, config last: a folder with a config always has the matching weights
    # unless a run is interrupted between the two replaces of a *re*-training.
    _atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    _atomic_write(out / CONFIG_NAME, write_config)


@torch.no_grad()
def evaluate(out: Path) -> dict[str, Any]:
    """Reload ``out`` through open_clip's local-dir path and score it on the held-out split."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    model.eval()
    test = load_digits("test")
    # The training-time transform must match what open_clip builds from the shipped config.
    ours = build_preprocess()
    probe = [im.convert("RGB") for im in test.images[:16]]
    if not all(torch.equal(ours(im), preprocess(im)) for im in probe):
        raise RuntimeError("training preprocessing differs from the shipped open_clip transform")
    images = torch.stack([preprocess(im.convert("RGB")) for im in test.images])
    image_features = model.encode_image(images, normalize=True)
    labels = torch.from_numpy(test.labels)

    def class_embeddings(template: str) -> torch.Tensor:
        texts = [template.format(name=name, digit=d) for d, name in enumerate(DIGIT_NAMES)]
        return model.encode_text(tokenizer(texts), normalize=True)

    results: dict[str, Any] = {"n_test": len(test), "templates": {}}
    prompt_cos = image_features @ class_embeddings(ZERO_SHOT_PROMPT).T
    results["zero_shot_accuracy"] = (prompt_cos.argmax(1) == labels).float().mean().item()
    for template in CAPTION_TEMPLATES:
        cos = image_features @ class_embeddings(template).T  # (n, 10)
        correct = cos.gather(1, labels[:, None]).squeeze(1)
        wrong = (cos.sum(1) - correct) / (cos.shape[1] - 1)
        results["templates"][template] = {
            "accuracy": (cos.argmax(1) == labels).float().mean().item(),
            "cos_correct": correct.mean().item(),
            "cos_wrong": wrong.mean().item(),
        }
    for template in UNSEEN_PROMPTS:
        cos = image_features @ class_embeddings(template).T
        results.setdefault("unseen_prompts", {})[template] = (
            (cos.argmax(1) == labels).float().mean().item()
        )
    # How much the text tower keeps of the phrasing: cosine between class embeddings of two
    # different templates, for the same digit and for different digits.
    per_template = torch.stack([class_embeddings(t) for t in CAPTION_TEMPLATES])  # (T, 10, d)
    flat = per_template.reshape(-1, per_template.shape[-1])
    sims = flat @ flat.T
    t_idx = torch.arange(len(CAPTION_TEMPLATES)).repeat_interleave(len(DIGIT_NAMES))
    d_idx = torch.arange(len(DIGIT_NAMES)).repeat(len(CAPTION_TEMPLATES))
    other_template = t_idx[:, None] != t_idx[None, :]
    same_digit = d_idx[:, None] == d_idx[None, :]
    results["text_cos_same_digit"] = sims[other_template & same_digit].mean().item()
    results["text_cos_other_digit"] = sims[other_template & ~same_digit].mean().item()
    # Each test image against its own dataset caption.
    caption_features = model.encode_text(tokenizer(test.captions), normalize=True)
    caption_cos = (image_features * caption_features).sum(1)
    results["dataset_caption_cos"] = caption_cos.mean().item()
    results["logit_scale"] = model.logit_scale.exp().item()
    return results


def print_results(results: dict[str, Any]) -> None:
    print(f"\nheld-out test split: {results['n_test']} images")
    print(f"zero-shot accuracy ('{ZERO_SHOT_PROMPT}'): {results['zero_shot_accuracy']:.4f}")
    print(f"mean cos(image, its dataset caption): {results['dataset_caption_cos']:.4f}")
    print(f"{'template':<48} {'acc':>6} {'cos+':>7} {'cos-':>7} {'gap':>7}")
    for template, r in results["templates"].items():
        gap = r["cos_correct"] - r["cos_wrong"]
        print(
            f"{template:<48} {r['accuracy']:6.3f} {r['cos_correct']:7.3f} "
            f"{r['cos_wrong']:7.3f} {gap:7.3f}"
        )
    corr = np.mean([r["cos_correct"] for r in results["templates"].values()])
    wrong = np.mean([r["cos_wrong"] for r in results["templates"].values()])
    print(f"{'mean over templates':<48} {'':>6} {corr:7.3f} {wrong:7.3f} {corr - wrong:7.3f}")
    print("zero-shot accuracy with phrasings not used in training (diagnostic):")
    for template, acc in results["unseen_prompts"].items():
        print(f"  {template!r:<46} {acc:6.3f}")
    same, other = results["text_cos_same_digit"], results["text_cos_other_digit"]
    print(f"text-text cosine across templates: same digit {same:.3f}, other digit {other:.3f}")
    print(f"logit scale: {results['logit_scale']:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    model = train(args)
    save(model, args)
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(f"wrote {args.out} ({size / 1e6:.2f} MB in folder)", flush=True)
    if not args.no_eval:
        print_results(evaluate(args.out))
    print(f"total time {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
