"""Reduced precision against fp32: what bf16 / fp16 embedding does to a guard's numbers.

A reference is calibrated on embeddings of one precision; a guard on a GPU would embed its
batches in another (``precision="auto"`` is bf16 on CUDA). This measures, on real held-out
digits, what that mix does, in one run and on the CPU (autocast bf16/fp16 works there):

1. **embeddings**: cosine between each sample's fp32 and reduced-precision embedding;
2. **per-sample scores** against an fp32 reference (alignment, k-NN distance, copy cosine,
   label probability): largest and median change, next to the scores' spread (IQR);
3. **per-sample decisions**: samples whose accept/reject flips when only the batch's precision
   changes (fp32 reference, fp32 batch vs the same batch in bf16);
4. **batch statistics**: how far the batch's precision alone moves each statistic the batch
   tests compute (the same 128-row subsamples, fp32 against reduced), in units of the
   statistic's spread over real subsamples. (The guard's p-values themselves are not compared:
   the held-out rows a batch meets are seeded by the batch's own bytes, so any change of the
   bytes redraws them, and the p-value moves by its own sampling noise.)

The per-sample decisions are also counted for (reduced reference, reduced batch): the
consistent numerics a guard gets when it embeds at the reference's precision.

The 540 held-out digits are split in two halves, each the reference for the other (two
measurements per model). Models: the bundled digits encoder (trained, d = 64) and a tiny
open_clip ViT with random weights (d = 32; its embeddings crowd together, a harsh case).

Usage:
    python benchmarks/bench_precision.py                     # both models, bf16 and fp16
    python benchmarks/bench_precision.py --models bundled --precisions bf16 --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import synthguard as sg
from synthguard.datasets import DIGIT_NAMES, load_digits

TEMPLATE = "a handwritten digit {name}"


def _encoder(model: str, precision: str, root: Path) -> Any:
    if model == "bundled":
        return sg.load_encoder("bundled:digits", device="cpu", precision=precision)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _tiny_models import build_openclip_dir

    folder = root / "tiny_oc"
    if not folder.exists():
        build_openclip_dir(folder)
    return sg.load_encoder(f"openclip:local-dir:{folder}", device="cpu", precision=precision)


def _reference(emb: Any, encoder: Any, labels: list[int] | None) -> sg.Reference:
    return sg.Reference.from_embeddings(
        emb.image, emb.text, encoder=encoder, labels=labels,
        label_names=DIGIT_NAMES if labels is not None else None, label_templates=TEMPLATE,
    )  # fmt: skip


def _iqr(values: np.ndarray) -> float:
    q1, q3 = np.percentile(values, [25, 75])
    return float(q3 - q1)


def measure(
    model: str, precision: str, root: Path, *, rows: int = 128, subsamples: int = 100
) -> dict[str, Any]:
    """Every number of the module docstring for one model and one reduced precision."""
    digits = load_digits("test")
    half = len(digits.labels) // 2
    fp32, low = _encoder(model, "fp32", root), _encoder(model, precision, root)
    labelled = model == "bundled"  # a random model's classes mean nothing
    labels = [int(v) for v in digits.labels]
    out: dict[str, Any] = {"model": model, "precision": precision, "splits": []}
    for ref_part, batch_part in ((slice(0, half), slice(half, None)),
                                 (slice(half, None), slice(0, half))):  # fmt: skip
        ref_pairs = sg.PairBatch(digits.images[ref_part], digits.captions[ref_part])
        batch_pairs = sg.PairBatch(digits.images[batch_part], digits.captions[batch_part])
        ref_labels = labels[ref_part] if labelled else None
        batch_labels = labels[batch_part] if labelled else None
        emb = {
            (p, part): enc.embed(pairs)
            for p, enc in (("fp32", fp32), (precision, low))
            for part, pairs in (("ref", ref_pairs), ("batch", batch_pairs))
        }
        b32, blow = emb["fp32", "batch"], emb[precision, "batch"]
        cos_image = (b32.image * blow.image).sum(1).numpy()
        cos_text = (b32.text * blow.text).sum(1).numpy()
        ref32 = _reference(emb["fp32", "ref"], fp32, ref_labels)
        ref_low = _reference(emb[precision, "ref"], low, ref_labels)
        guard32, guard_low = sg.Guard(ref32), sg.Guard(ref_low)

        same, mixed, consistent = (
            guard.check_embeddings(e.image, e.text, labels=batch_labels)
            for guard, e in ((guard32, b32), (guard32, blow), (guard_low, blow))
        )
        scores: dict[str, dict[str, float]] = {}
        for name in same.samples[0].scores:
            a = np.array([s.scores[name] for s in same.samples])
            b = np.array([s.scores[name] for s in mixed.samples])
            if not np.isfinite(a).any():
                continue  # a score this reference or batch does not have
            delta = np.abs(a - b)
            scores[name] = {
                "max_abs_change": float(np.nanmax(delta)),
                "median_abs_change": float(np.nanmedian(delta)),
                "iqr": _iqr(a[np.isfinite(a)]),
            }
        flips = [
            s.index for s, t in zip(same.samples, mixed.samples, strict=True)
            if s.accepted != t.accepted or set(s.reasons) != set(t.reasons)
        ]  # fmt: skip
        out["splits"].append({
            "n_batch": len(batch_pairs),
            "cos_image": {"min": float(cos_image.min()), "median": float(np.median(cos_image))},
            "cos_text": {"min": float(cos_text.min()), "median": float(np.median(cos_text))},
            "scores": scores,
            "decisions_changed": len(flips),
            "rejected": {"fp32/fp32": same.n_samples - same.n_accepted,
                         f"fp32/{precision}": mixed.n_samples - mixed.n_accepted,
                         f"{precision}/{precision}": consistent.n_samples
                         - consistent.n_accepted},
            "verdicts": {"fp32/fp32": same.verdict, f"fp32/{precision}": mixed.verdict,
                         f"{precision}/{precision}": consistent.verdict},
            "batch_shift": _batch_shift(emb["fp32", "ref"], b32, blow, rows, subsamples),
        })  # fmt: skip
    return out


def _batch_shift(
    ref: Any, b32: Any, blow: Any, rows: int, subsamples: int
) -> dict[str, dict[str, float]]:
    """Per batch statistic: how far the batch's precision alone moves it, in units of its
    spread over real batches.

    The same ``rows``-row subsamples of the batch, embedded in fp32 and in the reduced
    precision, are measured against the fp32 reference (``collapse_metrics``, what the batch
    tests compute). The shift is divided by the statistic's standard deviation over the fp32
    subsamples: a shift of 0.1 moves a one-sided p-value near 0.01 by at most ~0.3 percent.
    The subsamples overlap (``rows`` of 270), so this standard deviation is smaller than over
    independent real batches, and the ratio errs high.
    """
    from synthguard.functional import collapse_metrics, collapse_reference

    comparison = collapse_reference(ref.image, ref.text)
    gen = torch.Generator().manual_seed(0)
    high, reduced = [], []
    for _ in range(subsamples):
        idx = torch.randperm(b32.image.shape[0], generator=gen)[:rows]
        high.append(collapse_metrics(b32.image[idx], b32.text[idx], comparison))
        reduced.append(collapse_metrics(blow.image[idx], blow.text[idx], comparison))
    out = {}
    for name in high[0]:
        a = np.array([h[name] for h in high])
        b = np.array([r[name] for r in reduced])
        spread = float(a.std())
        if not spread > 0:
            continue
        shift = np.abs(b - a) / spread
        out[name] = {"max_shift_sd": float(shift.max()), "median_shift_sd": float(np.median(shift))}
    return out


def _table(result: dict[str, Any]) -> str:
    p = result["precision"]
    lines = [f"### {result['model']}, {p} against fp32", ""]
    for number, split in enumerate(result["splits"]):
        lines += [
            f"split {number}: {split['n_batch']} samples; embedding cosine fp32·{p}: images min "
            f"{split['cos_image']['min']:.6f} (median {split['cos_image']['median']:.7f}), "
            f"captions min {split['cos_text']['min']:.6f}",
            f"decisions changed by the batch's precision alone: {split['decisions_changed']} "
            f"of {split['n_batch']}; rejected (reference/batch precision): {split['rejected']}; "
            f"verdicts: {split['verdicts']}",
            "",
            "| per-sample score | max change | median change | IQR over the batch |",
            "|---|---|---|---|",
            *(
                f"| {name} | {s['max_abs_change']:.2e} | {s['median_abs_change']:.2e} | "
                f"{s['iqr']:.2e} |"
                for name, s in split["scores"].items()
            ),
            "",
            "| batch statistic | max shift (SDs) | median shift (SDs) |",
            "|---|---|---|",
            *(
                f"| {name} | {s['max_shift_sd']:.3f} | {s['median_shift_sd']:.3f} |"
                for name, s in split["batch_shift"].items()
            ),
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["bundled", "tiny-openclip"])
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp16"])
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"bench_precision — {datetime.date.today()}, {platform.machine()}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, CPU autocast\n")  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for precision in args.precisions:
                result = measure(model, precision, Path(tmp))
                results.append(result)
                print(_table(result), flush=True)
    print(f"{time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
