"""The command line: reference build, check (exit codes, outputs), bench, help texts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from synthguard.cli import main
from synthguard.datasets import DIGIT_NAMES, load_digits
from synthguard.sources import read_pairs

TEMPLATE = "a handwritten digit {name}"


def _folder(path: Path, images: list[Image.Image], captions: list[str], labels: list[int]) -> Path:
    path.mkdir()
    lines = []
    for i, (image, caption, label) in enumerate(zip(images, captions, labels, strict=True)):
        image.save(path / f"{i:04d}.png")
        lines.append(json.dumps({"file": f"{i:04d}.png", "caption": caption, "label": int(label)}))
    (path / "captions.jsonl").write_text("\n".join(lines))
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    test = load_digits("test")
    real = _folder(root / "real", test.images[:270], list(test.captions[:270]), test.labels[:270])
    fresh = _folder(root / "fresh", test.images[270:370], list(test.captions[270:370]),
                    test.labels[270:370])  # fmt: skip
    rng = np.random.default_rng(0)
    base = test.pixels[300].astype(np.int16)
    noisy = [
        Image.fromarray(np.clip(base + rng.integers(-12, 13, (8, 8)), 0, 255).astype(np.uint8))
        for _ in range(60)
    ]
    label = test.labels[300]
    collapsed = _folder(root / "collapsed", noisy, [TEMPLATE.format(name=DIGIT_NAMES[label])] * 60,
                        [label] * 60)  # fmt: skip
    reference = root / "real.sgref"
    code = main([
        "reference", "build", "--input", str(real), "--encoder", "bundled:digits",
        "--out", str(reference), "--label-names", ",".join(DIGIT_NAMES), "--template", TEMPLATE,
    ])  # fmt: skip
    assert code == 0
    return {"root": root, "reference": reference, "fresh": fresh, "collapsed": collapsed}


def test_check_accepts_real_pairs_and_writes_every_output(
    workspace: dict[str, Path], capsys: Any
) -> None:
    root = workspace["root"]
    code = main([
        "check", "--reference", str(workspace["reference"]), "--input", str(workspace["fresh"]),
        "--out", str(root / "report.json"), "--html", str(root / "report.html"),
        "--write-accepted", str(root / "accepted"),
    ])  # fmt: skip
    assert code == 0
    report = json.loads((root / "report.json").read_text())
    assert report["accepted"] and report["n_samples"] == 100
    assert "<svg" in (root / "report.html").read_text()
    accepted = read_pairs(root / "accepted")
    assert len(accepted) == report["n_accepted"]
    assert "batch ACCEPTED" in capsys.readouterr().out


def test_check_exits_1_on_a_collapsed_batch(workspace: dict[str, Path], capsys: Any) -> None:
    root = workspace["root"]
    code = main([
        "check", "--reference", str(workspace["reference"]),
        "--input", str(workspace["collapsed"]), "--write-accepted", str(root / "none"),
    ])  # fmt: skip
    assert code == 1
    captured = capsys.readouterr()
    assert "duplicate_rate" in captured.out and "wrote nothing" in captured.err
    assert not (root / "none").exists()


def test_check_exits_1_on_excess_rejects_and_writes_the_accepted_samples(
    workspace: dict[str, Path], capsys: Any
) -> None:
    """Most captions generic: not "accepted" (exit 1), but the samples that passed are written."""
    root = workspace["root"]
    test = load_digits("test")  # the "fresh" folder's pairs
    captions = ["a picture of a digit"] * 30 + list(test.captions[300:310])
    folder = _folder(root / "generic", test.images[270:310], captions, test.labels[270:310])
    code = main([
        "check", "--reference", str(workspace["reference"]), "--input", str(folder),
        "--out", str(root / "generic.json"), "--write-accepted", str(root / "generic_kept"),
    ])  # fmt: skip
    assert code == 1
    report = json.loads((root / "generic.json").read_text())
    assert report["verdict"] == "excess_rejects" and not report["accepted"]
    assert len(read_pairs(root / "generic_kept")) == report["n_accepted"] > 0
    assert "batch EXCESS REJECTS" in capsys.readouterr().out


def test_usage_and_input_errors_exit_2(workspace: dict[str, Path], capsys: Any) -> None:
    assert main(["check", "--reference", str(workspace["reference"]),
                 "--input", "/nonexistent/pairs"]) == 2  # fmt: skip
    assert "does not exist" in capsys.readouterr().err
    bad = workspace["root"] / "bad.sgref"
    bad.write_bytes(b"not a reference")
    assert main(["check", "--reference", str(bad), "--input", str(workspace["fresh"])]) == 2
    assert "not a synthguard reference" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--input", "x"])
    assert exit_info.value.code == 2
    assert main(["demo", "--generations", "0", "--no-progress"]) == 2
    assert "generations must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["demo"], ["reference", "build"], ["reference", "calibrate"], ["check"], ["bench"]],
    ids=lambda a: a[-1],
)
def test_every_command_documents_an_example(argv: list[str], capsys: Any) -> None:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    assert "example:" in capsys.readouterr().out


def test_calibrate_ahead_then_check_reads_the_saved_null(
    workspace: dict[str, Path], capsys: Any
) -> None:
    """`reference calibrate` writes the nulls a later `check` (same flags) reads: the report
    says it was cached; --out leaves the original untouched; bad sizes exit 2."""
    root = workspace["root"]
    ahead = root / "ahead.sgref"
    before = workspace["reference"].read_bytes()
    code = main([
        "reference", "calibrate", str(workspace["reference"]), "--sizes", "100",
        "--alpha", "0.1", "--out", str(ahead), "--threads", "1",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "calibrated batch tests at" in capsys.readouterr().out
    assert workspace["reference"].read_bytes() == before  # --out: the input is not rewritten
    code = main([
        "check", "--reference", str(ahead), "--input", str(workspace["fresh"]),
        "--alpha", "0.1", "--out", str(root / "cached.json"),
    ])  # fmt: skip
    report = json.loads((root / "cached.json").read_text())
    assert code == (0 if report["accepted"] else 1)
    assert report["null_cached"] is True, report["rows_tested"]
    main(["check", "--reference", str(ahead), "--input", str(workspace["fresh"]),
          "--out", str(root / "fresh.json")])  # fmt: skip
    assert json.loads((root / "fresh.json").read_text())["null_cached"] is False  # other alpha
    for bad in ("0", "ten", ""):
        with pytest.raises(SystemExit) as exit_info:
            main(["reference", "calibrate", str(ahead), "--sizes", bad])
        assert exit_info.value.code == 2
    assert "batch sizes" in capsys.readouterr().err


def test_bench_reports_ratios(capsys: Any) -> None:
    assert main(["bench"]) == 0
    out = capsys.readouterr().out
    assert "× embedding" in out and "guard.check_embeddings" in out


def test_labels_without_names_are_refused_not_dropped(
    workspace: dict[str, Path], capsys: Any
) -> None:
    out = workspace["root"] / "nameless.sgref"
    code = main(["reference", "build", "--input", str(workspace["fresh"]),
                 "--encoder", "bundled:digits", "--out", str(out)])  # fmt: skip
    assert code == 2 and not out.exists()
    assert "--label-names is required" in capsys.readouterr().err
    code = main(["reference", "build", "--input", str(workspace["fresh"]),
                 "--encoder", "bundled:digits", "--out", str(out), "--ignore-labels"])  # fmt: skip
    assert code == 0 and out.exists()


def test_outputs_are_checked_before_the_work(workspace: dict[str, Path], capsys: Any) -> None:
    """An output that cannot be written, or would overwrite the input, fails at once."""
    base = ["check", "--reference", str(workspace["reference"]), "--input",
            str(workspace["fresh"])]  # fmt: skip
    missing = workspace["root"] / "no" / "such" / "accepted"
    assert main([*base, "--write-accepted", str(missing)]) == 2
    assert "does not exist or is not writable" in capsys.readouterr().err
    assert main([*base, "--write-accepted", str(workspace["fresh"])]) == 2
    assert main([*base, "--out", str(workspace["fresh"] / "report.json")]) == 2
    assert "must not be the input" in capsys.readouterr().err
    assert not (workspace["fresh"] / "report.json").exists()


def test_version(capsys: Any) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"synthguard {version('synthguard')}"


def test_an_internal_error_has_its_own_exit_code_and_no_traceback(
    workspace: dict[str, Path], capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: a bug exited 1 ("batch rejected") with a traceback."""
    import synthguard.sources

    def broken(path: Any, **options: Any) -> Any:
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(synthguard.sources, "read_pairs", broken)
    argv = ["check", "--reference", str(workspace["reference"]), "--input", str(workspace["fresh"])]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: something inside broke" in err
    assert "Traceback" not in err and "--debug" in err
    assert main(["--debug", *argv]) == 3
    assert "Traceback" in capsys.readouterr().err


GUARD_YAML = """\
alpha: 0.1
seed: 3
n_resamples: 199
sample_checks: [low_alignment, off_manifold]
batch_tests: [frechet_distance, coverage]
class_mix: false
"""


def test_config_file_sets_the_guard_and_flags_override_it(
    workspace: dict[str, Path], capsys: Any
) -> None:
    """Issue 17: --config guard.yaml (GuardConfig's fields); calibrate and check read the same
    file, so the check finds its null; an explicit flag wins over the file."""
    import yaml

    root = workspace["root"]
    (root / "guard.yaml").write_text(GUARD_YAML)
    per_sample = {**yaml.safe_load(GUARD_YAML), "batch_tests": []}  # no null to compute
    (root / "guard.json").write_text(json.dumps(per_sample))
    ahead = root / "config_ahead.sgref"
    code = main([
        "reference", "calibrate", str(workspace["reference"]), "--sizes", "100",
        "--config", str(root / "guard.yaml"), "--out", str(ahead), "--threads", "1",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    code = main([
        "check", "--reference", str(ahead), "--input", str(workspace["fresh"]),
        "--config", str(root / "guard.yaml"), "--out", str(root / "config.json"),
    ])  # fmt: skip
    report = json.loads((root / "config.json").read_text())
    assert code == (0 if report["accepted"] else 1)
    assert (report["alpha"], report["seed"], report["null_cached"]) == (0.1, 3, True)
    assert {k for s in report["samples"] for k in s["thresholds"]} == {"alignment", "knn_distance"}
    tested = {name for name, m in report["metrics"].items() if m["passed"] is not None}
    assert tested == {"frechet_distance", "coverage"}
    code = main([
        "check", "--reference", str(ahead), "--input", str(workspace["fresh"]),
        "--config", str(root / "guard.json"), "--alpha", "0.2", "--out", str(root / "flag.json"),
    ])  # fmt: skip
    flagged = json.loads((root / "flag.json").read_text())
    assert (flagged["alpha"], flagged["seed"]) == (0.2, 3)  # the flag over the (JSON) file
    assert all(m["passed"] is None for m in flagged["metrics"].values())


@pytest.mark.parametrize(
    ("text", "flags", "expected"),
    [
        ("alpha: 1.5\n", [], "guard.yaml: key 'alpha' must be less than 1; got 1.5"),
        ("alpah: 0.1\n", [], "key 'alpah' is not a GuardConfig field (did you mean 'alpha'?)"),
        ("seed: [1]\n", [], "key 'seed' must be a valid integer; got [1]"),
        ("alpha: 0.1\nalpha: 0.2\n", [], "key 'alpha' is given twice (line 2)"),
        ("alpha: !!python/name:os.system\n", [], "is not valid YAML: could not determine"),
        ("alpha: 0.1\n", ["--alpha", "1.5"], "--alpha must be less than 1; got 1.5"),
        ("alpha: 0.1\n", ["--threads", "0"], "--threads must be greater than or equal to 1"),
    ],
)
def test_bad_config_exits_2_before_any_work(
    workspace: dict[str, Path], capsys: Any, text: str, flags: list[str], expected: str
) -> None:
    """Refused before the input is read: the input given here does not even exist."""
    config = workspace["root"] / "guard.yaml"
    config.write_text(text)
    code = main([
        "check", "--reference", str(workspace["reference"]), "--input", "/nonexistent/pairs",
        "--config", str(config), *flags,
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err, err
    assert err.count("\n") == 1  # one line
