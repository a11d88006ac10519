"""Audit an offline pool of synthetic pairs with Ray Data, on a laptop-sized Ray instance.

A pool of 160 pairs is written as Parquet (4 files): held-out real digits, one in five with
the caption of another digit (a bad captioner). Ray reads it, embeds it in a pool of 2 encoder
actors and streams the rows straight into the decision actors; one verdict comes back for the
whole pool, plus decision columns per row. ``ray.init(num_cpus=2)`` with 2 embedding actors
once stalled (the actors held both CPUs, the read tasks waited for ever): the actors now
reserve a share that leaves a CPU for the reads (``synthguard.integrations.ray.actor_cpus``).

    python examples/ray_audit.py            # offline, bundled model; about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import io
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data.expressions import col

import synthguard as sg
from synthguard.datasets import DIGIT_NAMES, load_digits
from synthguard.integrations.ray import audit, embed

POOL = range(300, 460)  # held-out digits the reference never saw
FILES = 4


def _png(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def write_pool(folder: Path) -> None:
    """The synthetic pool as Parquet files: image bytes, caption, id, label."""
    real = load_digits("test")
    rows = []
    for j, i in enumerate(POOL):
        label = int(real.labels[i])
        named = (label + 3) % 10 if j % 5 == 0 else label  # every fifth caption is wrong
        rows.append({"image": _png(real.images[i]), "id": int(i), "label": label,
                     "caption": f"a handwritten digit {DIGIT_NAMES[named]}"})  # fmt: skip
    per_file = len(rows) // FILES
    for f in range(FILES):
        part = rows[f * per_file : (f + 1) * per_file]
        table = pa.table({key: [row[key] for row in part] for key in part[0]})
        pq.write_table(table, folder / f"part-{f}.parquet")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--out", default=None, help="folder for the pool and the decisions")
    args = parser.parse_args(argv)
    folder = Path(args.out or tempfile.mkdtemp(prefix="ray-audit-"))
    (folder / "pool").mkdir(parents=True, exist_ok=True)
    write_pool(folder / "pool")

    real = load_digits("test")
    reference = sg.Reference.build(
        real.images[:300], real.captions[:300], encoder="bundled:digits",
        labels=real.labels[:300], label_names=DIGIT_NAMES,
    )  # fmt: skip
    if not ray.is_initialized():  # a cluster you already joined is used as it is
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)

    ds = ray.data.read_parquet(str(folder / "pool"), override_num_blocks=FILES)
    ds = embed(ds, "bundled:digits", batch_size=40, concurrency=2)  # streamed, not materialised
    result = audit(ds, reference, batch_size=40, id_column="id", label_column="label")
    print(result.report.summary().splitlines()[0])

    table = result.decisions.select_columns(["id", "sg_accepted", "sg_reasons"]).to_pandas()
    reasons = table.loc[~table["sg_accepted"], "sg_reasons"].value_counts()
    print(f"pool: {len(table)} rows, {int(table['sg_accepted'].sum())} may be trained on")
    for reason, count in reasons.items():
        print(f"rejected for {reason}: {count}")
    result.decisions.filter(expr=col("sg_accepted")).write_parquet(str(folder / "accepted"))
    print(f"accepted rows written to {folder / 'accepted'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
