"""Embedding-engine benchmark: synthguard vs its limit and vs torchmetrics, in one run.

1. **Engine vs limit.** synthguard end to end (JPEG files -> unit embeddings: decode, preprocess,
   batching, forward, normalise) against the bare ``model.encode_image`` forward on tensors that
   were preprocessed beforehand (the best any pipeline can do with this model).
2. **CLIPScore vs torchmetrics.** The same image–caption pairs and the same transformers CLIP
   weights, the same batch size: synthguard (``encode_images`` + ``encode_texts``) against
   ``torchmetrics.multimodal.CLIPScore`` fed the decoded images. Scores are checked equal.

Models are random weights of real sizes (no pretrained weights offline): a tiny CLIP and a
ViT-B-32-sized CLIP. Images are real photos (scikit-image's public-domain samples), cropped and
written as JPEG files by the benchmark.

Usage:
    python benchmarks/bench_embed.py                      # both models, 256 images
    python benchmarks/bench_embed.py --models tiny --n-images 512
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import synthguard as sg


def _photos(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Random crops of scikit-image's sample photos, resized to ``size``."""
    from PIL import Image
    from skimage import data

    sources = [
        np.asarray(getattr(data, name)())
        for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
    ]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        photo = sources[i % len(sources)]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 2, min(h, w)))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(photo[top : top + side, left : left + side]).resize((size, size))
        out.append(np.asarray(crop.convert("RGB")))
    return out


def _write_jpegs(images: list[np.ndarray], folder: Path) -> list[str]:
    from PIL import Image

    paths = []
    for i, image in enumerate(images):
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(image).save(path, quality=90)
        paths.append(str(path))
    return paths


def _best_of(repeats: int, *fns: Callable[[], Any]) -> list[float]:
    """Best wall time of each function, run interleaved so machine noise hits all alike."""
    for fn in fns:
        fn()  # warm-up: thread pools, allocator, lazy imports
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def _build_models(name: str, root: Path) -> tuple[Path, Path]:
    """An open_clip folder and a transformers folder with the *same* weights."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _tiny_models import TINY_OPENCLIP, build_hf_clip_dir, build_openclip_dir

    if name == "tiny":
        oc = build_openclip_dir(root / "tiny_oc")
        return oc, build_hf_clip_dir(root / "tiny_hf", openclip_dir=oc)
    import open_clip

    cfg = open_clip.get_model_config("ViT-B-32")
    cfg["text_cfg"]["vocab_size"] = TINY_OPENCLIP["text_cfg"]["vocab_size"]
    oc = build_openclip_dir(root / "vitb32_oc", cfg=cfg)
    return oc, _hf_vitb32(root / "vitb32_hf", oc)


def _hf_vitb32(path: Path, openclip_dir: Path) -> Path:
    """A transformers CLIPModel of ViT-B-32 size holding the open_clip model's weights."""
    from safetensors.torch import load_file
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from _tiny_models import OPENAI_MEAN, OPENAI_STD, _hf_tokenizer, openclip_to_hf_state_dict

    config = CLIPConfig(
        text_config={"hidden_act": "gelu", "eos_token_id": 49407, "pad_token_id": 49407},
        vision_config={"patch_size": 32, "hidden_act": "gelu"},
        projection_dim=512,
    )
    model = CLIPModel(config).eval()
    weights = load_file(str(openclip_dir / "open_clip_model.safetensors"))
    model.load_state_dict(openclip_to_hf_state_dict(weights), strict=True)
    model.save_pretrained(str(path))
    _hf_tokenizer(path).save_pretrained(str(path))
    CLIPImageProcessor(image_mean=OPENAI_MEAN, image_std=OPENAI_STD).save_pretrained(str(path))
    return path


def bench_engine_vs_limit(oc_dir: Path, paths: list[str], batch_size: int, repeats: int) -> dict:
    from PIL import Image

    enc = sg.load_encoder(f"openclip:local-dir:{oc_dir}", batch_size=batch_size, device="cpu")
    model: Any = enc.module
    preprocess = enc._backend._preprocess  # the exact transform the engine applies
    pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])

    def limit() -> None:
        with torch.inference_mode():
            for start in range(0, len(pixels), batch_size):
                model.encode_image(pixels[start : start + batch_size])

    t_limit, t_engine = _best_of(repeats, limit, lambda: enc.encode_images(paths))
    n = len(paths)
    return {
        "limit_img_s": n / t_limit,
        "engine_img_s": n / t_engine,
        "ratio": t_limit / t_engine,
    }


def bench_vs_torchmetrics(
    hf_dir: Path, images: list[np.ndarray], paths: list[str], batch_size: int, repeats: int
) -> dict:
    from PIL import Image
    from torchmetrics.multimodal import CLIPScore
    from transformers import CLIPModel, CLIPProcessor

    captions = [
        f"a photo number {i} of a cat, a rocket or a cup of coffee" for i in range(len(paths))
    ]
    enc = sg.load_encoder(f"hf:{hf_dir}", batch_size=batch_size, device="cpu")

    class _Features(torch.nn.Module):
        """torchmetrics 1.9 calls .norm on get_*_features, an output object in transformers 5."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner, self.config = inner, inner.config

        def get_image_features(self, *a: Any, **k: Any) -> torch.Tensor:
            return self.inner.get_image_features(*a, **k).pooler_output

        def get_text_features(self, *a: Any, **k: Any) -> torch.Tensor:
            return self.inner.get_text_features(*a, **k).pooler_output

    model = _Features(CLIPModel.from_pretrained(str(hf_dir)).eval())
    processor = CLIPProcessor.from_pretrained(str(hf_dir))
    metric = CLIPScore(model_name_or_path=lambda: (model, processor))

    def ours() -> float:
        img = enc.encode_images(paths)
        txt = enc.encode_texts(captions)
        # torchmetrics 1.9 clamps the *mean* of 100*cos at 0 (its docs say per sample);
        # compare like for like here. synthguard's own clip_score clamps per sample.
        return max(float((100 * (img * txt).sum(1)).mean()), 0.0)

    def theirs() -> float:
        metric.reset()
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            tensors = [
                torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
                for p in chunk
            ]
            metric.update(tensors, captions[start : start + batch_size])
        return float(metric.compute())

    score_ours, score_theirs = ours(), theirs()
    t_ours, t_theirs = _best_of(repeats, ours, theirs)
    n = len(paths)
    return {
        "synthguard_pairs_s": n / t_ours,
        "torchmetrics_pairs_s": n / t_theirs,
        "speedup": t_theirs / t_ours,
        "clipscore_synthguard": score_ours,
        "clipscore_torchmetrics": score_theirs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "vit-b-32"])
    parser.add_argument("--n-images", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads",
        "n_images": args.n_images,
        "batch_size": args.batch_size,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images = _photos(args.n_images, args.image_size)
        paths = _write_jpegs(images, root)
        for name in args.models:
            oc_dir, hf_dir = _build_models(name, root)
            results[name] = {
                "engine_vs_limit": bench_engine_vs_limit(
                    oc_dir, paths, args.batch_size, args.repeats
                ),
                "vs_torchmetrics": bench_vs_torchmetrics(
                    hf_dir, images, paths, args.batch_size, args.repeats
                ),
            }
    print(f"# bench_embed — {results['date']} — {results['machine']}")
    print(f"{args.n_images} JPEG files ({args.image_size}px), batch size {args.batch_size}\n")
    print("| model | bare forward (img/s) | synthguard files→emb (img/s) | ratio |")
    print("|---|---|---|---|")
    for name in args.models:
        r = results[name]["engine_vs_limit"]
        print(f"| {name} | {r['limit_img_s']:.1f} | {r['engine_img_s']:.1f} | {r['ratio']:.3f} |")
    print(
        "\n| model | torchmetrics CLIPScore (pairs/s) | synthguard (pairs/s) | speed-up | "
        "CLIPScore tm / sg |"
    )
    print("|---|---|---|---|---|")
    for name in args.models:
        r = results[name]["vs_torchmetrics"]
        print(
            f"| {name} | {r['torchmetrics_pairs_s']:.1f} | {r['synthguard_pairs_s']:.1f} | "
            f"{r['speedup']:.2f}x | {r['clipscore_torchmetrics']:.4f} / "
            f"{r['clipscore_synthguard']:.4f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
