"""Your model in memory, your experiment trackers: generations of a loop watched by synthguard.

The encoder is an open_clip model your code already loaded (here the bundled digits model,
loaded through open_clip itself) wrapped with ``synthguard.encoders.from_open_clip``. Five
generations of a self-consuming loop keep fewer and fewer digit classes (10, 8, 6, 4, 2). Each
generation is checked by the guard (``report.to_pandas()``: one row per sample, the rejects
counted by reason), measured with ``generation_metrics``, and logged by ``CollapseMonitor`` to
its JSONL file, to TensorBoard and to MLflow at once (``loggers=[writer, mlflow]``; MLflow's
local file store, as mlflow-skinny has no database backend).

    python examples/monitor_trackers.py --out trackers/   # offline, ~20 s on 2 CPU cores
    tensorboard --logdir trackers/tb                      # monitor/* per generation
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import mlflow
import numpy as np
import open_clip
from torch.utils.tensorboard import SummaryWriter

import synthguard as sg
from synthguard.datasets import load_digits
from synthguard.encoders import bundled_model_path, from_open_clip
from synthguard.monitor import generation_metrics

CLASSES = (10, 8, 6, 4, 2)  # digit classes each generation still produces
SIZE = 100


def generation(g: int) -> sg.PairBatch:
    """``SIZE`` held-out digits of the first ``CLASSES[g]`` classes (the loop forgets the rest)."""
    real = load_digits("test")
    rng = np.random.default_rng(g)
    pool = [i for i in range(300, 540) if real.labels[i] < CLASSES[g]]
    chosen = rng.choice(pool, size=SIZE, replace=len(pool) < SIZE)
    ids = [f"g{g}-{k}" for k in range(SIZE)]
    return sg.PairBatch(
        [real.images[i] for i in chosen], [real.captions[i] for i in chosen], ids=ids
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for the log, TensorBoard and MLflow")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="monitor-trackers-"))
    out.mkdir(parents=True, exist_ok=True)

    # A model your code loaded itself: no spec, no download.
    where = f"local-dir:{bundled_model_path('digits')}"
    model, _, preprocess = open_clip.create_model_and_transforms(where)
    encoder = from_open_clip(model, preprocess, open_clip.get_tokenizer(where))

    real = load_digits("test")
    reference = sg.Reference.build(real.images[:200], real.captions[:200], encoder=encoder)
    guard = sg.Guard(reference, sg.GuardConfig(n_resamples=199, alpha_batch=0.05))

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # a local folder, no server
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"file:{out / 'mlruns'}")
    writer = SummaryWriter(str(out / "tb"))
    try:
        with (
            mlflow.start_run() as run,
            sg.CollapseMonitor(out / "loop.jsonl", loggers=[writer, mlflow]) as monitor,
        ):
            for g in range(len(CLASSES)):
                batch = generation(g)
                pairs = encoder.embed(batch)  # once: the guard and the metrics share it
                report = guard.check_embeddings(pairs.image, pairs.text, ids=batch.ids)
                table = report.to_pandas()  # one row per sample: scores, thresholds, reasons
                rejects = table.loc[~table["accepted"], "reasons"].value_counts().to_dict()
                record = monitor.log(
                    g, generation_metrics(reference, pairs.image, pairs.text), reports=[report]
                )
                warned = ", ".join(w["metric"] for w in record["warnings"]) or "none"
                print(f"generation {g} ({CLASSES[g]} classes): {report.verdict}, rejects "
                      f"{rejects}, variance ratio {record['metrics']['variance_ratio']:.3f}, "
                      f"warnings: {warned}")  # fmt: skip
    finally:
        writer.close()
        mlflow.set_tracking_uri(previous)
    print(f"MLflow run {run.info.run_id} in {out / 'mlruns'}; TensorBoard in {out / 'tb'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
