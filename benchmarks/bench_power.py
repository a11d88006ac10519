"""Power of the guard against graded, known-bad batches, side by side with the baselines.

Real digits (sklearn's 1,797, embedded by ``bundled:digits``): a labelled reference from
``--reference`` random pairs, and batches of ``--batch`` pairs from the rest, made bad in one
way per case. Per case and method: the batch reject rate over ``--trials`` batches and, for
the per-sample methods, the recall on bad samples and the false-reject rate on the real samples
mixed in. The first row (``real``) is the false-alarm rate. Baselines a practitioner would use
instead, on the same embeddings:

- ``clip_cut``: DataComp-style per-sample cut at the reference's 5th percentile of the
  image–caption cosine; the batch is rejected when its flagged count is above the 99 %
  binomial bound of 5 %.
- ``mmd``: an alibi-detect-style MMD drift test (RBF, median-heuristic bandwidth, 199
  permutations) of the batch's images against 300 reference images, at p <= 0.01.
- ``fd``: a Fréchet-distance threshold at the 99th percentile of real-vs-real resamples of
  the reference at the batch's size.

Usage:
    .venv/bin/python benchmarks/bench_power.py                   # 20 trials per case
    .venv/bin/python benchmarks/bench_power.py --trials 50 --json power.json
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageFilter
from scipy import stats

import synthguard as sg
from synthguard import functional as F
from synthguard.datasets import DIGIT_NAMES, digit_caption, load_digits

TEMPLATE = "a handwritten digit {name}"


@dataclass
class Batch:
    images: list[Image.Image]
    captions: list[str]
    labels: list[int]
    bad: np.ndarray  # [n] bool: the samples made bad (per-sample recall is over these)


@dataclass
class Tally:
    rejected: int = 0
    trials: int = 0
    bad_flagged: int = 0
    bad: int = 0
    good_flagged: int = 0
    good: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def add(self, batch_rejected: bool, flagged: np.ndarray | None, bad: np.ndarray) -> None:
        self.trials += 1
        self.rejected += bool(batch_rejected)
        if flagged is not None:
            self.bad_flagged += int(flagged[bad].sum())
            self.bad += int(bad.sum())
            self.good_flagged += int(flagged[~bad].sum())
            self.good += int((~bad).sum())

    def row(self) -> dict[str, float | None]:
        return {
            "batch_reject": self.rejected / self.trials,
            "recall": self.bad_flagged / self.bad if self.bad else None,
            "false_reject": self.good_flagged / self.good if self.good else None,
        }


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def _image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def _shift(image: Image.Image) -> Image.Image:
    return _image(np.roll(_pixels(image), 1, axis=1))


def _crop(image: Image.Image) -> Image.Image:
    """The top-left 7/8 of the image, resized back (a crop that keeps most of the digit)."""
    w, h = image.size
    return image.crop((0, 0, w - w // 8, h - h // 8)).resize((w, h), Image.Resampling.BILINEAR)


Transform = Callable[[Batch, np.ndarray, np.random.Generator], None]


def _each(fn: Callable[[Image.Image, np.random.Generator], Image.Image]) -> Transform:
    def apply(batch: Batch, rows: np.ndarray, rng: np.random.Generator) -> None:
        for i in rows:
            batch.images[i] = fn(batch.images[i], rng)

    return apply


def _captions(fn: Callable[[str, int, np.random.Generator], str]) -> Transform:
    def apply(batch: Batch, rows: np.ndarray, rng: np.random.Generator) -> None:
        for i in rows:
            batch.captions[i] = fn(batch.captions[i], batch.labels[i], rng)

    return apply


def _labels(batch: Batch, rows: np.ndarray, rng: np.random.Generator) -> None:
    for i in rows:
        batch.labels[i] = (batch.labels[i] + 3) % 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reference", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--extra-tests", default="", help="batch tests added to the default family, e.g. density"
    )
    parser.add_argument(
        "--weights", default="", help="Holm weights, e.g. flag_rate=3 (GuardConfig.test_weights)"
    )
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    enc = sg.load_encoder("bundled:digits")
    digits = load_digits("all")
    order = rng.permutation(len(digits))
    ref_idx, pool = order[: args.reference], order[args.reference :]
    images, captions = digits.images, digits.captions
    labels = [int(y) for y in digits.labels]
    started = time.perf_counter()
    reference = sg.Reference.build(
        [images[i] for i in ref_idx], [captions[i] for i in ref_idx], encoder=enc,
        labels=[labels[i] for i in ref_idx], label_names=DIGIT_NAMES, label_templates=TEMPLATE,
    )  # fmt: skip
    extra = tuple(t for t in args.extra_tests.split(",") if t)
    weights = {k: float(v) for k, v in (w.split("=") for w in args.weights.split(",") if w)}
    config = sg.GuardConfig(
        batch_tests=(*sg.GuardConfig().batch_tests, *extra),
        **({"test_weights": weights} if weights else {}),
    )
    guard = sg.Guard(reference, config)
    ref_image = enc.encode_images([images[i] for i in ref_idx]).double()
    ref_text = enc.encode_texts([captions[i] for i in ref_idx]).double()
    ref_cos = (ref_image * ref_text).sum(dim=1)
    cut = float(torch.quantile(ref_cos, 0.05))
    cut_bound = int(stats.binom.ppf(0.99, args.batch, 0.05))
    mmd_ref = ref_image[:300]
    sigma = float(torch.cdist(mmd_ref, mmd_ref).median())
    fd_null = []
    for _ in range(200):
        pick = rng.permutation(args.reference)
        fd_null.append(
            F.frechet_distance(ref_image[pick[: args.batch]], ref_image[pick[args.batch :]])
        )
    fd_bound = float(np.quantile(fd_null, 0.99))

    def blur(im: Image.Image, r: np.random.Generator) -> Image.Image:
        return im.filter(ImageFilter.GaussianBlur(0.8))

    def noise(sd: float) -> Callable[[Image.Image, np.random.Generator], Image.Image]:
        return lambda im, r: _image(_pixels(im) + r.normal(0, sd, (8, 8)))

    def contrast(im: Image.Image, r: np.random.Generator) -> Image.Image:
        return _image(_pixels(im) * 0.5)

    def wrong_caption(c: str, y: int, r: np.random.Generator) -> str:
        return digit_caption((y + 3) % 10, r)

    def generic(c: str, y: int, r: np.random.Generator) -> str:
        return "a picture of a digit"

    def lengthened(c: str, y: int, r: np.random.Generator) -> str:
        return ", ".join([c] * 3)

    def copies(batch: Batch, rows: np.ndarray, r: np.random.Generator) -> None:
        for i in rows:
            j = int(r.choice(ref_idx))
            batch.images[i], batch.captions[i], batch.labels[i] = images[j], captions[j], labels[j]

    def copies_via(fn: Callable[[Image.Image], Image.Image]) -> Transform:
        def apply(batch: Batch, rows: np.ndarray, r: np.random.Generator) -> None:
            copies(batch, rows, r)
            for i in rows:
                batch.images[i] = fn(batch.images[i])

        return apply

    def reencoded(im: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        im.save(buffer, format="JPEG", quality=75)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("L")

    def duplicates(batch: Batch, rows: np.ndarray, r: np.random.Generator) -> None:
        keep = np.setdiff1d(np.arange(len(batch.images)), rows)
        for i in rows:
            j = int(r.choice(keep))
            batch.images[i], batch.captions[i], batch.labels[i] = (
                batch.images[j],
                batch.captions[j],
                batch.labels[j],
            )

    def within_class(batch: Batch, rows: np.ndarray, r: np.random.Generator) -> None:
        # Each class collapses onto 2 prototypes from the pool, with a little pixel jitter.
        protos = {c: [int(i) for i in r.choice(pool[np.asarray(labels)[pool] == c], 2)]
                  for c in range(10)}  # fmt: skip
        for i in rows:
            j = protos[batch.labels[i]][int(r.integers(2))]
            batch.images[i] = _image(_pixels(images[j]) + r.integers(-8, 9, (8, 8)))
            batch.captions[i] = captions[j]

    everything = {"real": None, "collapse to 2 classes": "classes", "class drift 25 %": "drift",
                  "within-class collapse": within_class, "duplicates 50 %": duplicates,
                  "wrong captions": _captions(wrong_caption), "wrong labels": _labels,
                  "generic captions": _captions(generic), "3x captions": _captions(lengthened),
                  "blur": _each(blur), "noise σ=8": _each(noise(8)), "noise σ=16": _each(noise(16)),
                  "noise σ=32": _each(noise(32)), "noise σ=64": _each(noise(64)),
                  "contrast ×0.5": _each(contrast),
                  "reference copies": copies, "copies shifted 1 px": copies_via(_shift),
                  "copies cropped 7/8": copies_via(_crop),
                  "copies flipped": copies_via(lambda im: im.transpose(Image.FLIP_LEFT_RIGHT)),
                  "copies re-encoded (JPEG 75)": copies_via(reencoded),
                  "blur 10 %": (_each(blur), 0.10), "blur 25 %": (_each(blur), 0.25),
                  "blur 50 %": (_each(blur), 0.50)}  # fmt: skip
    results: dict[str, dict[str, dict[str, float | None]]] = {}
    chosen = [c for c in args.cases.split(",") if c] or list(everything)
    for case, spec in ((c, everything[c]) for c in chosen):
        tallies = {m: Tally() for m in ("synthguard", "clip_cut", "mmd", "fd")}
        for _ in range(args.trials):
            fraction = 1.0
            transform = spec
            if isinstance(spec, tuple):
                transform, fraction = spec
            if spec == "classes":
                two = rng.choice(10, 2, replace=False)
                candidates = pool[np.isin(np.asarray(labels)[pool], two)]
                rows_idx = rng.choice(candidates, args.batch, replace=False)
            elif spec == "drift":
                threes = pool[np.asarray(labels)[pool] == 3]
                others = pool[np.asarray(labels)[pool] != 3]
                k = args.batch // 4
                rows_idx = np.concatenate(
                    [rng.choice(threes, k, replace=False),
                     rng.choice(others, args.batch - k, replace=False)]
                )  # fmt: skip
            else:
                rows_idx = rng.choice(pool, args.batch, replace=False)
            batch = Batch(
                [images[i] for i in rows_idx], [captions[i] for i in rows_idx],
                [labels[i] for i in rows_idx], np.zeros(args.batch, dtype=bool),
            )  # fmt: skip
            if spec in ("classes", "drift"):
                batch.bad[:] = True
            elif callable(transform):
                n_bad = round(fraction * args.batch)
                if transform is duplicates:
                    n_bad = args.batch // 2
                bad_rows = rng.choice(args.batch, n_bad, replace=False)
                transform(batch, bad_rows, rng)
                batch.bad[bad_rows] = True
            report = guard.check(sg.PairBatch(batch.images, batch.captions, labels=batch.labels))
            flagged = np.array([not s.accepted for s in report.samples])
            relabeled = np.array([s.new_label != batch.labels[s.index] for s in report.samples])
            sample_caught = flagged | relabeled if spec is _labels else flagged
            tallies["synthguard"].add(report.verdict != "accepted", sample_caught, batch.bad)
            image = enc.encode_images(batch.images).double()
            text = enc.encode_texts(batch.captions).double()
            cos = (image * text).sum(dim=1).numpy()
            cut_flags = cos < cut
            tallies["clip_cut"].add(int(cut_flags.sum()) > cut_bound, cut_flags, batch.bad)
            mmd = F.mmd_permutation_test(
                image, mmd_ref, 199, int(rng.integers(1 << 30)), sigma=sigma
            )
            tallies["mmd"].add(mmd.p_value <= 0.01, None, batch.bad)
            tallies["fd"].add(F.frechet_distance(image, ref_image) > fd_bound, None, batch.bad)
        results[case] = {m: t.row() for m, t in tallies.items()}
        cells = "  ".join(f"{m} {_cell(r)}" for m, r in results[case].items())
        print(f"{case:24s} {cells}", flush=True)
    meta = {
        "command": "benchmarks/bench_power.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v is not None),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
        "date": datetime.date.today().isoformat(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(meta))
    print(_markdown(results))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"meta": meta, "results": results}, handle, indent=2)


def _cell(row: dict[str, float | None]) -> str:
    """``batch reject rate / per-sample recall / per-sample false-reject rate``."""
    return " / ".join(f"{v:.2f}" for v in row.values() if v is not None)


def _markdown(results: dict[str, dict[str, dict[str, float | None]]]) -> str:
    lines = ["| case | synthguard | clip_cut | mmd | fd |", "|---|---|---|---|---|"]
    for case, rows in results.items():
        lines.append(f"| {case} | " + " | ".join(_cell(rows[m]) for m in rows) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
