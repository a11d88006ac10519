"""The shipped ``bundled:digits`` weights and the dataset/training script behind them.

The model is loaded straight through open_clip's ``local-dir:`` path (not synthguard's factory),
so these tests pin down what the shipped folder itself provides.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from synthguard.datasets import (
    CAPTION_TEMPLATES,
    DIGIT_NAMES,
    digit_caption,
    load_digits,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DIGITS_DIR = REPO_ROOT / "src" / "synthguard" / "encoders" / "_bundled" / "digits"
SCRIPT = REPO_ROOT / "scripts" / "train_bundled_digits.py"
PROMPT = "a handwritten digit {name}"
MAX_FOLDER_BYTES = 8 * 1024 * 1024


def _class_texts(template: str) -> list[str]:
    return [template.format(name=name, digit=d) for d, name in enumerate(DIGIT_NAMES)]


# --------------------------------------------------------------------------- dataset


def test_split_sizes_and_fields() -> None:
    train, test, full = load_digits("train"), load_digits("test"), load_digits("all")
    assert (len(train), len(test), len(full)) == (1257, 540, 1797)
    for ds in (train, test, full):
        n = len(ds)
        assert len(ds.images) == len(ds.captions) == len(ds.ids) == n
        assert ds.labels.dtype == np.int64 and ds.labels.shape == (n,)
        assert ds.pixels.dtype == np.uint8 and ds.pixels.shape == (n, 8, 8)
        assert ds.label_names == list(DIGIT_NAMES)
        image = ds.images[0]
        assert image.mode == "L" and image.size == (8, 8)
        assert np.array_equal(np.asarray(image), ds.pixels[0])


def test_pixels_match_sklearn() -> None:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    full = load_digits("all")
    expected = np.rint(bunch.images * 255.0 / 16.0).astype(np.uint8)
    assert np.array_equal(full.pixels, expected)
    assert np.array_equal(full.labels, bunch.target)
    # White ink on black background, as sklearn gives it: the border is mostly dark.
    assert full.pixels[:, :, 0].mean() < 40


def test_split_is_deterministic_disjoint_and_stratified() -> None:
    train_a, test_a = load_digits("train"), load_digits("test")
    train_b, test_b = load_digits("train"), load_digits("test")
    assert train_a.ids == train_b.ids and test_a.ids == test_b.ids
    assert train_a.captions == train_b.captions
    assert not set(train_a.ids) & set(test_a.ids)
    assert set(train_a.ids) | set(test_a.ids) == set(load_digits("all").ids)

    # Exactly sklearn's stratified split.
    from sklearn.model_selection import train_test_split

    full = load_digits("all")
    idx_train, idx_test = train_test_split(
        np.arange(len(full)), test_size=0.3, random_state=0, stratify=full.labels
    )
    assert train_a.ids == [f"digits-{i:04d}" for i in idx_train]
    assert test_a.ids == [f"digits-{i:04d}" for i in idx_test]

    # Stratified: each class's share matches the full set's to within one sample.
    full_counts = Counter(full.labels.tolist())
    for ds, share in ((train_a, 0.7), (test_a, 0.3)):
        counts = Counter(ds.labels.tolist())
        assert set(counts) == set(range(10))
        for label, total in full_counts.items():
            assert abs(counts[label] - share * total) <= 1.0


def test_captions_consistent_across_splits_and_valid() -> None:
    full = load_digits("all")
    by_id = dict(zip(full.ids, full.captions, strict=True))
    test = load_digits("test")
    assert [by_id[i] for i in test.ids] == test.captions
    filled = {
        template.format(name=DIGIT_NAMES[d], digit=d): d
        for template in CAPTION_TEMPLATES
        for d in range(10)
    }
    for caption, label in zip(full.captions, full.labels, strict=True):
        assert filled[caption] == label
    assert len(set(full.captions)) > 50  # varied, not one template


def test_digit_caption() -> None:
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    a = [digit_caption(7, rng_a) for _ in range(50)]
    assert a == [digit_caption(7, rng_b) for _ in range(50)]
    assert all("seven" in c or "7" in c for c in a)
    with pytest.raises(ValueError):
        digit_caption(10, rng_a)


def test_as_images_false() -> None:
    ds = load_digits("test", as_images=False)
    assert ds.pixels.shape == (540, 8, 8)
    with pytest.raises(AttributeError):
        _ = ds.images


# --------------------------------------------------------------------------- shipped folder


def test_folder_contents_and_size() -> None:
    files = {p.name for p in DIGITS_DIR.iterdir() if p.is_file()}
    assert {"open_clip_config.json", "open_clip_model.safetensors"} <= files
    # open_clip's local-dir loader globs *.safetensors/*.bin/*.pth: there must be only one.
    assert [n for n in files if n.endswith((".safetensors", ".bin", ".pth"))] == [
        "open_clip_model.safetensors"
    ]
    total = sum((DIGITS_DIR / n).stat().st_size for n in files)
    assert total <= MAX_FOLDER_BYTES, f"{total / 1e6:.2f} MB"


@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{DIGITS_DIR}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{DIGITS_DIR}")
    model.eval()
    test = load_digits("test")
    with torch.no_grad():
        images = torch.stack([preprocess(im.convert("RGB")) for im in test.images])
        image_features = model.encode_image(images, normalize=True)
    return {
        "model": model,
        "preprocess": preprocess,
        "tokenizer": tokenizer,
        "test": test,
        "image_features": image_features,
    }


def _text(shipped: dict[str, Any], texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        features: torch.Tensor = shipped["model"].encode_text(
            shipped["tokenizer"](texts), normalize=True
        )
    return features


def test_loads_as_float32_with_default_tokenizer(shipped: dict[str, Any]) -> None:
    import open_clip

    model = shipped["model"]
    assert isinstance(model, open_clip.CLIP)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    tokenizer = shipped["tokenizer"]
    assert isinstance(tokenizer, open_clip.SimpleTokenizer)
    assert tokenizer.context_length == model.context_length
    assert model.vocab_size == 49408
    assert shipped["tokenizer"](["a handwritten digit seven"]).shape == (1, model.context_length)


def test_grayscale_and_rgb_inputs_preprocess_identically(shipped: dict[str, Any]) -> None:
    image = shipped["test"].images[0]
    assert torch.equal(shipped["preprocess"](image), shipped["preprocess"](image.convert("RGB")))


def test_zero_shot_accuracy_on_held_out_digits(shipped: dict[str, Any]) -> None:
    labels = torch.from_numpy(shipped["test"].labels)
    logits = shipped["image_features"] @ _text(shipped, _class_texts(PROMPT)).T
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.90, accuracy


@pytest.mark.parametrize("template", CAPTION_TEMPLATES)
def test_correct_caption_beats_wrong_for_every_template(
    shipped: dict[str, Any], template: str
) -> None:
    labels = torch.from_numpy(shipped["test"].labels)
    cos = shipped["image_features"] @ _text(shipped, _class_texts(template)).T  # (n, 10)
    correct = cos.gather(1, labels[:, None]).squeeze(1)
    wrong = (cos.sum(1) - correct) / 9
    assert correct.mean() > wrong.mean() + 0.2
    assert (cos.argmax(1) == labels).float().mean() >= 0.85


def test_dataset_captions_align_with_their_images(shipped: dict[str, Any]) -> None:
    """Each image's own caption vs the same caption with another digit swapped in."""
    test = shipped["test"]
    own = (shipped["image_features"] * _text(shipped, test.captions)).sum(1)
    swapped = []
    for caption, label in zip(test.captions, test.labels, strict=True):
        wrong = (int(label) + 1) % 10
        swapped.append(
            caption.replace(DIGIT_NAMES[label], DIGIT_NAMES[wrong]).replace(str(label), str(wrong))
        )
    other = (shipped["image_features"] * _text(shipped, swapped)).sum(1)
    assert own.mean() > other.mean() + 0.2
    assert (own > other).float().mean() >= 0.9


# --------------------------------------------------------------------------- training script


@pytest.mark.slow
def test_training_script_is_deterministic(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    outs = [tmp_path / "a", tmp_path / "b"]
    cmd = [sys.executable, str(SCRIPT), "--steps", "5", "--no-eval", "--quiet"]
    procs = [
        subprocess.Popen(
            [*cmd, "--out", str(out)],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for out in outs
    ]
    for proc in procs:
        stdout, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, stdout.decode(errors="replace")[-2000:]

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    for name in ("open_clip_model.safetensors", "open_clip_config.json"):
        assert digest(outs[0] / name) == digest(outs[1] / name)
    # Only the two model files are written (temp files are renamed away).
    assert sorted(p.name for p in outs[0].iterdir()) == [
        "open_clip_config.json",
        "open_clip_model.safetensors",
    ]
    # And five steps changed the weights away from the shipped model's (a real run happened).
    assert digest(outs[0] / "open_clip_model.safetensors") != digest(
        DIGITS_DIR / "open_clip_model.safetensors"
    )
