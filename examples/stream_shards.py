"""Guard WebDataset shards as they stream, with the guard's settings in a config file (offline).

Three gzipped shards of 40 synthetic pairs each are written in the img2dataset layout: real
held-out digits, the same with every fourth caption naming the wrong digit, and a collapsed
shard (one digit, jittered). They are read back through a brace pattern, one bounded chunk at a
time (``synthguard.sources.iter_pairs``: memory holds one chunk, never a whole shard), and each
chunk is checked by a guard whose settings come from ``guard.yaml`` (``GuardConfig.from_file``,
the CLI's ``--config``). The same in the shell:

    synthguard check --reference ref.sgref --config guard.yaml --input 'shards/{000..002}.tar.gz'

    python examples/stream_shards.py [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

import synthguard as sg
from synthguard.datasets import DIGIT_NAMES, load_digits
from synthguard.sources import iter_pairs, write_pairs

CHUNK = 40
GUARD_YAML = """\
# GuardConfig fields; explicit CLI flags override them
alpha_batch: 0.05
n_resamples: 199
seed: 3
"""


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_shards(folder: Path) -> list[Path]:
    """Three shards: real, a quarter miscaptioned, collapsed onto one jittered digit."""
    real = load_digits("test")
    rng = np.random.default_rng(0)
    base = real.pixels[420].astype(np.int16)
    shards: list[Path] = []
    for index in range(3):
        images = [_png(im) for im in real.images[300 + CHUNK * index : 300 + CHUNK * (index + 1)]]
        captions = list(real.captions[300 + CHUNK * index : 300 + CHUNK * (index + 1)])
        if index == 1:  # the captioner names the wrong digit for every fourth pair
            for i in range(0, CHUNK, 4):
                wrong = (real.labels[300 + CHUNK + i] + 5) % 10
                captions[i] = f"a handwritten digit {DIGIT_NAMES[wrong]}"
        if index == 2:  # a collapsed generator: one image, jittered
            jitter = [rng.integers(-10, 11, base.shape) for _ in range(CHUNK)]
            images = [
                _png(Image.fromarray(np.clip(base + j, 0, 255).astype(np.uint8))) for j in jitter
            ]
            captions = [f"a handwritten digit {DIGIT_NAMES[real.labels[420]]}"] * CHUNK
        batch = sg.PairBatch(images, captions, ids=[f"s{index}-{i:03d}" for i in range(CHUNK)])
        shards.append(write_pairs(batch, folder / f"{index:03d}.tar.gz", "webdataset"))
    return shards


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for the shards and guard.yaml")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="synthguard-shards-"))
    (out / "shards").mkdir(parents=True, exist_ok=True)
    write_shards(out / "shards")
    (out / "guard.yaml").write_text(GUARD_YAML)

    real = load_digits("test")
    reference = sg.Reference.build(real.images[:300], real.captions[:300], encoder="bundled:digits")
    guard = sg.Guard(reference, sg.GuardConfig.from_file(out / "guard.yaml"))
    pattern = out / "shards" / "{000..002}.tar.gz"  # expanded by synthguard, as bash would
    kept = total = 0
    for chunk, batch in enumerate(iter_pairs(pattern, chunk_size=CHUNK)):
        report = guard.check(batch)
        accepted = report.apply(batch)
        kept += 0 if accepted is None else len(accepted)
        total += len(batch)
        failed = ", ".join(m.name for m in report.failed_tests) or "none"
        print(
            f"chunk {chunk}: {report.verdict}, {report.n_accepted} of {report.n_samples} samples "
            f"accepted; failed tests: {failed}"
        )
    print(f"kept for training: {kept} of {total} pairs (shards and guard.yaml in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
