"""Guard overhead benchmark: ``guard.check`` beyond embedding, against the embedding itself.

A 50,000-pair reference and 4,096-pair batches of d = 512 unit embeddings (a 50-cluster mixture
with noisy captions, the shape of CLIP ViT-B-32 features), on CPU. Measured in one run:

1. ``Reference.from_embeddings`` (support k-NN radii, leave-one-out calibration scores);
2. the first ``check_embeddings`` at this batch size (includes the one-off resampled null);
3. a steady-state ``check_embeddings`` of a new batch (the null is cached);
4. the baseline: the bare forward of a ViT-B-32-sized open_clip model (random weights, same
   cost as pretrained) on preprocessed image tensors and tokenized captions, timed on
   ``--embed-sample`` pairs and scaled to the batch: a *lower bound* on embedding the batch
   (synthguard's engine runs at 0.98 of it, docs/benchmarks.md).

Usage:
    python benchmarks/bench_guard.py                       # 50k reference, 4096 batch
    python benchmarks/bench_guard.py --reference 5000 --batch 512 --resamples 999
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import time

import torch

import synthguard as sg


def _mixture(
    n: int, d: int, centres: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, ...]:
    pick = torch.randint(0, centres.shape[0], (n,), generator=gen)
    image = centres[pick] + 1.5 * torch.randn(n, d, generator=gen)
    text = image + 0.8 * torch.randn(n, d, generator=gen)
    return (
        torch.nn.functional.normalize(image, dim=1),
        torch.nn.functional.normalize(text, dim=1),
    )


def _embedding_baseline(pairs: int) -> float:
    """Seconds for the bare ViT-B-32 forward of ``pairs`` image–caption pairs (batch 64)."""
    import open_clip

    model = open_clip.create_model("ViT-B-32").eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    images = torch.randn(64, 3, 224, 224)
    tokens = tokenizer(["a photo of a cat sitting on a red sofa in the sun"] * 64)
    with torch.inference_mode():
        model.encode_image(images[:8])  # warm-up
        start = time.perf_counter()
        for _ in range(max(pairs // 64, 1)):
            model.encode_image(images)
            model.encode_text(tokens)
    return (time.perf_counter() - start) / (max(pairs // 64, 1) * 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--embed-sample", type=int, default=128)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(50, args.dim, generator=gen)
    ref_img, ref_txt = _mixture(args.reference, args.dim, centres, gen)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    reference = sg.Reference.from_embeddings(ref_img, ref_txt)
    timings["build_reference_s"] = time.perf_counter() - start
    guard = sg.Guard(reference, sg.GuardConfig(n_resamples=args.resamples))

    first = _mixture(args.batch, args.dim, centres, gen)
    start = time.perf_counter()
    report = guard.check_embeddings(*first)
    timings["first_check_with_calibration_s"] = time.perf_counter() - start

    second = _mixture(args.batch, args.dim, centres, gen)
    start = time.perf_counter()
    report = guard.check_embeddings(*second)
    timings["steady_check_s"] = time.perf_counter() - start

    per_pair = _embedding_baseline(args.embed_sample)
    timings["embedding_lower_bound_s"] = per_pair * args.batch
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch_threads": torch.get_num_threads(),
        "reference_pairs": args.reference,
        "support": reference.n_support,
        "batch": args.batch,
        "dim": args.dim,
        "resamples": args.resamples,
        "rows_tested": report.rows_tested,
        "accepted": report.accepted,
        **{k: round(v, 3) for k, v in timings.items()},
        "steady_check_over_embedding": round(
            timings["steady_check_s"] / timings["embedding_lower_bound_s"], 4
        ),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
