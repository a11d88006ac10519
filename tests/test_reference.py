"""Reference: build, calibration on held-out real data, save/load, integrity, fingerprints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import synthguard as sg
from synthguard.datasets import DIGIT_NAMES, load_digits

TEMPLATE = "a handwritten digit {name}"


@pytest.fixture(scope="module")
def digits() -> Any:
    # The bundled encoder was trained on the "train" split; real references in these tests use
    # the held-out "test" split, as a production reference uses data the encoder never saw.
    return load_digits("test")


@pytest.fixture(scope="module")
def embedded(digits: Any, digits_encoder: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        digits_encoder.encode_images(digits.images).double(),
        digits_encoder.encode_texts(digits.captions).double(),
    )


@pytest.fixture(scope="module")
def reference(digits: Any, digits_encoder: Any) -> sg.Reference:
    return sg.Reference.build(
        digits.images[:300], digits.captions[:300], encoder=digits_encoder,
        labels=digits.labels[:300], label_names=DIGIT_NAMES, label_templates=TEMPLATE,
        ids=digits.ids[:300],
    )  # fmt: skip


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_per_sample_false_reject_rate_on_held_out_real_pairs_is_alpha(
    alpha: float, digits: Any, embedded: Any, digits_encoder: Any
) -> None:
    """Across random reference / held-out splits of real digits, rejects average α ± 2 points."""
    image, text = embedded
    labels = torch.tensor(digits.labels)
    rates = []
    for split in range(10):
        perm = torch.randperm(540, generator=torch.Generator().manual_seed(split))
        ref_rows, held = perm[:270], perm[270:]
        ref = sg.Reference.from_embeddings(
            image[ref_rows], text[ref_rows], labels=labels[ref_rows], label_names=DIGIT_NAMES,
            encoder=digits_encoder, label_templates=TEMPLATE,
        )  # fmt: skip
        guard = sg.Guard(ref, sg.GuardConfig(alpha=alpha, batch_tests=(), label_policy="reject"))
        report = guard.check_embeddings(image[held], text[held], labels=labels[held])
        rates.append(1 - report.n_accepted / report.n_samples)
        assert report.n_samples == 270
    assert abs(float(np.mean(rates)) - alpha) <= 0.02, rates


def test_thresholds_tighten_as_alpha_grows(reference: sg.Reference) -> None:
    loose, strict = reference.thresholds(0.01), reference.thresholds(0.2)
    assert strict["low_alignment"] >= loose["low_alignment"]
    assert strict["off_manifold"] <= loose["off_manifold"]
    assert strict["reference_copy"] <= loose["reference_copy"]
    assert set(loose) == {
        "low_alignment", "off_manifold", "reference_copy", "near_duplicate", "label_mismatch",
    }  # fmt: skip
    # One leave-one-out score (the nearest other support image) calibrates both copy checks.
    assert loose["near_duplicate"] == loose["reference_copy"]
    assert "long_caption" in reference.calibration.names  # built from captions: opt-in ready
    assert reference.calibration.flags(0.1).double().mean() <= 0.1


def test_support_is_bounded_and_keeps_every_pair_in_the_stats(digits: Any, embedded: Any) -> None:
    image, text = embedded
    ref = sg.Reference.from_embeddings(image, text, support_size=100)
    assert ref.n_support == 100 and ref.stats.n_pairs == 540
    assert ref.calibration.names == (
        "low_alignment", "off_manifold", "reference_copy", "near_duplicate",
    )  # fmt: skip
    assert not ref.has_labels


def test_save_load_round_trip_is_exact(reference: sg.Reference, tmp_path: Path) -> None:
    reference.batch_null(20, alpha=0.05, resamples=99, seed=0)  # cached: must be saved too
    path = reference.save(tmp_path / "real.sgref")
    assert [p.name for p in tmp_path.iterdir()] == ["real.sgref"]  # no temp file left behind
    loaded = sg.Reference.load(path)
    assert loaded.thresholds(0.05) == reference.thresholds(0.05)
    assert torch.equal(loaded.calibration.badness, reference.calibration.badness)
    assert torch.equal(loaded.class_embeddings, reference.class_embeddings)  # type: ignore[arg-type]
    assert loaded.fingerprint == reference.fingerprint and loaded.label_names == DIGIT_NAMES
    torch.testing.assert_close(  # bit-equal, NaN (an opt-in column not computed) included
        loaded.batch_null(20, alpha=0.05, resamples=99, seed=0),
        reference.batch_null(20, alpha=0.05, resamples=99, seed=0),
        rtol=0, atol=0, equal_nan=True,
    )  # fmt: skip
    assert loaded.encoder is None  # encoders are never pickled into the file


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_damaged_reference_files_are_detected(
    reference: sg.Reference, tmp_path: Path, damage: str
) -> None:
    path = reference.save(tmp_path / "real.sgref")
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[-100] ^= 0x01  # inside the tensor data: only the checksum can tell
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "garbage":
        blob = bytearray(b"\x00" * 64)
    else:
        blob = bytearray()
    path.write_bytes(bytes(blob))
    with pytest.raises(sg.CorruptFileError):
        sg.Reference.load(path)


def _edit_header(blob: bytes, edit: Any) -> bytes:
    """The same safetensors blob with its synthguard metadata edited (the tensors untouched)."""
    import json
    import struct

    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length])
    meta = json.loads(header["__metadata__"]["synthguard"])
    edit(meta)
    header["__metadata__"]["synthguard"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + blob[8 + length :]


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(k=4),
        lambda m: m.update(label_names=m["label_names"][:-1]),
        lambda m: m.update(coverage_rows=10),
        lambda m: m.update(checks=list(reversed(m["checks"]))),
    ],
    ids=["k 5 -> 4", "label_names shortened", "coverage_rows", "checks reordered"],
)
def test_edited_metadata_fails_the_checksum(
    reference: sg.Reference, tmp_path: Path, edit: Any
) -> None:
    """Issue 16: the checksum covered the tensors only; an edited header loaded and decided."""
    path = reference.save(tmp_path / "real.sgref")
    path.write_bytes(_edit_header(path.read_bytes(), edit))
    with pytest.raises(sg.CorruptFileError, match="checksum"):
        sg.Reference.load(path)


@pytest.mark.parametrize("meta", [[1, 2], "synthguard", 3.5, None])
def test_metadata_that_is_not_an_object_is_a_corrupt_file(
    reference: sg.Reference, tmp_path: Path, meta: Any
) -> None:
    """Issue 16: a header whose metadata was a list raised a raw AttributeError."""
    import json
    import struct

    blob = reference.to_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length])
    header["__metadata__"]["synthguard"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path = tmp_path / "odd.sgref"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + blob[8 + length :])
    with pytest.raises(sg.CorruptFileError, match="not a synthguard reference"):
        sg.Reference.load(path)
    state = reference.to_state()
    with pytest.raises(sg.CorruptFileError, match="mappings"):
        sg.Reference.from_state(type(state)(tensors=state.tensors, meta=meta))


@pytest.mark.parametrize(
    "damage",
    ["cut coverage radii", "short label names", "bf16 badness", "k too large", "null columns"],
)
def test_inconsistent_states_name_the_tensor(reference: sg.Reference, damage: str) -> None:
    """What the checksum cannot catch (a version-2 file, a hand-made state): shapes and dtypes
    are checked against the metadata on load, not found by an IndexError at check time."""
    from synthguard.reference._codec import ReferenceState

    reference.batch_null(20, alpha=0.05, resamples=19, seed=0)
    state = reference.to_state()
    tensors, meta = dict(state.tensors), dict(state.meta)
    if damage == "cut coverage radii":
        tensors["coverage_radii_sq"] = tensors["coverage_radii_sq"][:-3]
        match = "coverage_radii_sq"
    elif damage == "short label names":
        meta["label_names"] = meta["label_names"][:-1]
        match = "class_embeddings"
    elif damage == "bf16 badness":
        tensors["calibration_badness"] = tensors["calibration_badness"].bfloat16()
        match = "float32 or float64"
    elif damage == "k too large":
        meta["k"] = 10_000
        match = "k must be between"
    else:
        key = next(k for k in tensors if k.startswith("null/"))
        tensors[key] = tensors[key][:, :-1]
        match = "columns"
    with pytest.raises(sg.CorruptFileError, match=match):
        sg.Reference.from_state(ReferenceState(tensors=tensors, meta=meta))


def test_a_different_encoder_is_refused(
    reference: sg.Reference, tmp_path: Path, tiny_encoder: Any
) -> None:
    path = reference.save(tmp_path / "real.sgref")
    with pytest.raises(sg.IncompatibleStatsError, match="fingerprint"):
        sg.Reference.load(path, encoder=tiny_encoder)
    with pytest.raises(sg.IncompatibleStatsError):
        sg.Guard(reference, encoder=tiny_encoder)


def test_guard_reloads_the_encoder_from_the_spec(digits: Any, tmp_path: Path) -> None:
    ref = sg.Reference.build(digits.images[:60], digits.captions[:60], encoder="bundled:digits")
    assert ref.encoder_spec == "bundled:digits"
    loaded = sg.Reference.load(ref.save(tmp_path / "r.sgref"))
    guard = sg.Guard(loaded, sg.GuardConfig(batch_tests=()))
    assert guard.encoder is not None
    assert guard.encoder.fingerprint == ref.fingerprint


def test_unreadable_real_samples_are_counted_not_hidden(digits: Any, digits_encoder: Any) -> None:
    images = [*digits.images[:40], b"not an image", os.devnull + "/missing.png"]
    captions = [*digits.captions[:40], "a handwritten digit one", "a handwritten digit two"]
    with pytest.warns(UserWarning, match="skipped 2 real samples"):
        ref = sg.Reference.build(images, captions, encoder=digits_encoder)
    assert ref.skipped == {"unreadable_image": 2}
    assert ref.stats.n_pairs == 40


def test_bad_arguments_name_the_problem(digits: Any, digits_encoder: Any, embedded: Any) -> None:
    with pytest.raises(sg.InvalidInputError, match=r"labels\[0\] must be a class index"):
        sg.Reference.build(
            digits.images[:20], digits.captions[:20], encoder=digits_encoder,
            labels=[12] * 20, label_names=DIGIT_NAMES,
        )  # fmt: skip
    with pytest.raises(sg.InvalidInputError, match="without label_names"):
        sg.Reference.from_embeddings(embedded[0][:20], embedded[1][:20], labels=[0] * 20)
    with pytest.raises(sg.InvalidInputError, match="at least k \\+ 2"):
        sg.Reference.from_embeddings(embedded[0][:5], embedded[1][:5])
    with pytest.raises(sg.InvalidInputError, match="one row per image"):
        sg.Reference.from_embeddings(embedded[0][:20], embedded[1][:19])
    with pytest.raises(sg.InvalidInputError, match="alpha"):
        sg.Reference.from_embeddings(embedded[0][:20], embedded[1][:20]).thresholds(1.5)


# -- file format versions --------------------------------------------------------------------

V1_FILE = Path(__file__).parent / "data" / "reference_v1.sgref"


def _v1_twin(digits_encoder: Any) -> sg.Reference:
    """The reference tests/data/reference_v1.sgref was written from (synthguard 0.1.0.dev0,
    format version 1, with one cached null), built again by this version."""
    train = load_digits("train")
    return sg.Reference.build(
        train.images[:160], train.captions[:160], encoder=digits_encoder,
        labels=train.labels[:160], label_names=DIGIT_NAMES, label_templates=TEMPLATE,
        support_size=160,
    )  # fmt: skip


def test_a_version_1_file_loads_and_decides_as_a_fresh_build(
    digits: Any, digits_encoder: Any
) -> None:
    old = sg.Reference.load(V1_FILE)
    new = _v1_twin(digits_encoder)
    names = old.calibration.names
    assert names == ("low_alignment", "off_manifold", "reference_copy", "near_duplicate",
                     "label_mismatch")  # fmt: skip
    # near_duplicate's column is reference_copy's, as version 1 shared it.
    badness = old.calibration.badness
    assert torch.equal(badness[:, names.index("near_duplicate")], badness[:, 2])
    # The file's embeddings came from an earlier torch: the encoder's outputs (and so the
    # scores) agree to ~2e-7, not bit for bit; the thresholds are the same order statistics.
    assert torch.allclose(badness, new.sample_calibration(names).badness, rtol=1e-5, atol=1e-12)
    assert old.thresholds(0.05) == pytest.approx(new.thresholds(0.05), rel=1e-5)
    # Its cached null lacked newer tests' columns: dropped, recomputed on first use.
    assert not [k for k in old.to_state().tensors if k.startswith("null/")]
    config = sg.GuardConfig(n_resamples=199, alpha_batch=0.05)
    batch = sg.PairBatch(digits.images[:40], digits.captions[:40], labels=digits.labels[:40])
    got = sg.Guard(old, config, encoder=digits_encoder).check(batch).to_dict()
    want = sg.Guard(new, config).check(batch).to_dict()
    assert got["accepted"] == want["accepted"]
    assert [s["reasons"] for s in got["samples"]] == [s["reasons"] for s in want["samples"]]
    # A version-1 file recorded no caption lengths: the (informational) length test is skipped.
    assert set(want["metrics"]) - set(got["metrics"]) == {"caption_length_shift"}
    for name, metric in got["metrics"].items():
        assert want["metrics"][name]["p_value"] == pytest.approx(metric["p_value"]), name


def test_a_loaded_version_1_file_is_saved_as_the_current_version(tmp_path: Path) -> None:
    from synthguard.reference._codec import FORMAT_VERSION, decode

    blob = sg.Reference.load(V1_FILE).to_bytes()
    assert decode(blob).meta["format_version"] == FORMAT_VERSION == 3
    again = sg.Reference.from_bytes(blob)
    assert again.calibration.names == sg.Reference.load(V1_FILE).calibration.names


def test_bytes_round_trip_keeps_nulls_and_decisions(reference: sg.Reference) -> None:
    guard = sg.Guard(reference, sg.GuardConfig(n_resamples=199, alpha_batch=0.05))
    digits = load_digits("test")
    batch = sg.PairBatch(digits.images[300:340], digits.captions[300:340])
    first = guard.check(batch)
    copy = sg.Reference.from_bytes(reference.to_bytes())
    nulls = [k for k in copy.to_state().tensors if k.startswith("null/")]
    assert nulls  # the null computed above travelled with the bytes
    second = sg.Guard(copy, guard.config, encoder=guard.encoder).check(batch)
    assert (first.null_cached, second.null_cached) == (False, True)  # computed, then read
    assert second.model_copy(update={"null_cached": False}).to_dict() == first.to_dict()


def test_a_version_1_file_written_before_concept_banks_loads(tmp_path: Path) -> None:
    import json
    import struct

    from safetensors.torch import load as load_tensors
    from safetensors.torch import save as save_tensors

    blob = V1_FILE.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    meta = json.loads(json.loads(blob[8 : 8 + length])["__metadata__"]["synthguard"])
    del meta["concept_banks"]  # the key came with concept banks, in format version 1
    older = save_tensors(load_tensors(blob), metadata={"synthguard": json.dumps(meta)})
    ref = sg.Reference.from_bytes(older)
    assert ref.concept_banks == [] and "near_duplicate" in ref.calibration.names
