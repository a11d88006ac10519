"""The ``synthguard`` command line.

Exit codes: 0 success, 2 usage or input error (argparse's convention).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import torch

from synthguard._errors import SynthGuardError

__all__ = ["main"]

_DEMO_EXAMPLE = """example:
  synthguard demo                       # bundled digits encoder on held-out real digits
  synthguard demo --batch-size 128 --no-progress
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``synthguard`` console script."""
    parser = argparse.ArgumentParser(
        prog="synthguard",
        description="Guard retraining pipelines against model collapse from synthetic data.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="embed and score the bundled real digits with the bundled offline encoder",
        epilog=_DEMO_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--batch-size", type=int, default=64, help="samples per forward pass")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args.batch_size, args.device, progress=not args.no_progress)
    except SynthGuardError as exc:
        print(f"synthguard: error: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2  # pragma: no cover - parser.error exits


def _demo(batch_size: int, device: str, *, progress: bool) -> int:
    """Smoke run: embed held-out real digits and their captions, print a per-class table."""
    from synthguard.datasets import DIGIT_NAMES, load_digits
    from synthguard.encoders import load_encoder

    encoder = load_encoder(
        "bundled:digits", batch_size=batch_size, device=device, progress=progress
    )
    data = load_digits("test")
    print(
        f"encoder {encoder.fingerprint.model_id}  dim={encoder.dim}  device={encoder.device}  "
        f"fingerprint={encoder.fingerprint.digest[:12]}"
    )
    start = time.perf_counter()
    images = encoder.encode_images(data.images)
    elapsed = time.perf_counter() - start
    captions = encoder.encode_texts(list(data.captions))
    prompts = encoder.encode_texts([f"a handwritten digit {name}" for name in DIGIT_NAMES])
    labels = torch.as_tensor(data.labels)
    predicted = (images @ prompts.T).argmax(dim=1)
    own = (images * captions).sum(dim=1)
    # A wrong caption: the caption of the next sample with a different label.
    shifted = torch.roll(torch.arange(len(labels)), 1)
    wrong_mask = labels[shifted] != labels
    wrong = (images * captions[shifted]).sum(dim=1)

    print(f"\nheld-out real digits: {len(labels)} (train split never seen by the encoder)\n")
    print("| class | n   | zero-shot acc | cos(own caption) | cos(other-class caption) |")
    print("|-------|-----|---------------|------------------|--------------------------|")
    for label, name in enumerate(DIGIT_NAMES):
        rows = labels == label
        other = rows & wrong_mask
        class_accuracy = float((predicted[rows] == label).float().mean())
        print(
            f"| {name:<5} | {int(rows.sum()):>3} | {class_accuracy:>13.3f} "
            f"| {float(own[rows].mean()):>16.3f} | {float(wrong[other].mean()):>24.3f} |"
        )
    accuracy = float((predicted == labels).float().mean())
    print(
        f"| all   | {len(labels):>3} | {accuracy:>13.3f} | {float(own.mean()):>16.3f} "
        f"| {float(wrong[wrong_mask].mean()):>24.3f} |"
    )
    print(f"\nembedded {len(labels)} images in {elapsed:.2f} s ({len(labels) / elapsed:.0f} img/s)")
    print("The full self-consuming-loop demo arrives with the guard; this is the engine smoke run.")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
