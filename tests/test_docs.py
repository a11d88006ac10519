"""Every code block in README.md and docs/ runs as written, so the docs cannot rot.

Python blocks of a page run in order in one namespace (as a reader pastes them), in a fresh
folder; ``synthguard`` command lines of shell blocks run through the CLI there, on real
digits written in the layouts they name; a ``yaml`` block whose first line is ``# NAME.yaml``
is that file, written there for the commands after it (and read as a ``GuardConfig``).
Offline: a hub model named in a block is replaced by the bundled one (a captioner by a tiny
BLIP built from a config). Set-up lines (``make``, ``pip``) are what CI itself runs; two long
commands are run by their own tests.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

import synthguard as sg
from synthguard.cli import main
from synthguard.datasets import load_digits
from synthguard.sources import write_pairs

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: Languages of blocks that are not code to run (diagrams, formulas, file layouts).
NOT_CODE = {"text"}
SETUP = ("make ", "pip ", "python -m pip ")
COVERED = {"synthguard demo": "tests/test_demo.py", "synthguard bench": "tests/test_cli.py"}
CAPTIONER = "hf:Salesforce/blip-image-captioning-base"
HUB_QUOTED = re.compile(r"\"(?:openclip|hf):[^\"]*\"")
HUB_BARE = re.compile(r"(?<![\w\"])(?:openclip|hf):\S+")


def _blocks(page: Path) -> list[tuple[str, str]]:
    return FENCE.findall(page.read_text("utf-8"))


def _commands(code: str) -> list[str]:
    """Logical lines of a shell block (continuations joined, comments dropped)."""
    joined = code.replace("\\\n", " ")
    lines = [line.split("  #")[0].split(" # ")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def captioner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from synthguard._testing import tiny_blip

    model, processor = tiny_blip(["a", "digit", "handwritten", "number", "seven", "one"])
    folder = tmp_path_factory.mktemp("blip")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _inputs(folder: Path) -> None:
    """Real pairs in the layouts the shell blocks name, and a synthetic shard."""
    real = load_digits("test")
    pairs = sg.PairBatch(real.images[:300], real.captions[:300], ids=real.ids[:300])
    for name in ("real", "real_pairs"):
        write_pairs(pairs, folder / name, "folder")
    synthetic = sg.PairBatch(real.images[300:380], real.captions[300:380], ids=real.ids[300:380])
    write_pairs(synthetic, folder / "synthetic.tar", "webdataset")
    (folder / "shards").mkdir()
    for number, part in enumerate((range(0, 40), range(40, 80))):
        write_pairs(
            synthetic.select(part), folder / "shards" / f"{number:03d}.tar.gz", "webdataset"
        )


def _offline(code: str, captioner: Path) -> str:
    code = code.replace(CAPTIONER, f"hf:{captioner}")
    code = HUB_QUOTED.sub(lambda m: m.group(0) if str(captioner) in m.group(0)
                          else '"bundled:digits"', code)  # fmt: skip
    return code


def _run_shell(code: str, captioner: Path) -> None:
    for line in _commands(code):
        if line.startswith(SETUP) or any(line.startswith(c) for c in COVERED):
            continue
        assert line.startswith("synthguard "), f"not a synthguard command: {line!r}"
        argv = shlex.split(HUB_BARE.sub("bundled:digits", _offline(line, captioner)))[1:]
        code_ = main(argv)
        assert code_ in (0, 1), f"{line!r} exited {code_}"  # 1: a rejected batch, by design


def _pages_with_code() -> list[Path]:
    return [p for p in PAGES if any(lang not in NOT_CODE for lang, _ in _blocks(p))]


#: A ``yaml`` block is a file the commands after it read: its first line names it.
FILE_BLOCK = re.compile(r"# ([\w.-]+\.ya?ml)\n")


def test_every_block_says_what_it_is() -> None:
    for page in PAGES:
        for lang, code in _blocks(page):
            assert lang in {"python", "bash", "yaml", *NOT_CODE}, (page.name, lang, code[:60])
            if lang == "yaml":
                assert FILE_BLOCK.match(code), (page.name, "start with '# NAME.yaml'", code[:60])


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages_with_code(), ids=lambda p: p.name)
def test_code_blocks_run(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captioner_dir: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    for number, (lang, code) in enumerate(_blocks(page)):
        if lang == "python":
            source = _offline(code, captioner_dir)
            exec(compile(source, f"{page.name} block {number}", "exec"), namespace)
        elif lang == "bash":
            _run_shell(code, captioner_dir)
        elif lang == "yaml":
            match = FILE_BLOCK.match(code)
            assert match, (page.name, number)
            (tmp_path / match[1]).write_text(code, "utf-8")
            sg.GuardConfig.from_file(tmp_path / match[1])  # the keys are GuardConfig's
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():  # a page started Ray: leave none running
        ray.shutdown()
