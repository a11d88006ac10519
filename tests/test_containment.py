"""Issue 16: sources read nothing outside the input, only regular files, and bounded amounts.

Symlinks leading out of a folder, Parquet strings opened as paths, FIFOs and devices, huge or
sparse tar members and images whose resize explodes: each is a per-sample reject with its
reason code (or, for a caption file or shard, a clear error), never a read of a private file,
a hang or a MemoryError.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import synthguard as sg
from synthguard._io import FileRefusedError, read_file
from synthguard.datasets import load_digits
from synthguard.encoders import embed_pairs, load_image
from synthguard.encoders._images import ImageDecodeError
from synthguard.sources import RefusedImage, SourceFile, read_pairs, write_pairs

OUTSIDE, TOO_LARGE = sg.ReasonCode.OUTSIDE_INPUT, sg.ReasonCode.IMAGE_TOO_LARGE
UNREADABLE = sg.ReasonCode.UNREADABLE_IMAGE


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pngs() -> list[bytes]:
    return [_png(image) for image in load_digits("test").images[:6]]


def _folder(root: Path, files: dict[str, bytes | None]) -> Path:
    """A folder source: ``files`` written (``None``: made by the caller), all listed."""
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if data is not None:
            (root / name).write_bytes(data)
    lines = [json.dumps({"file": n, "caption": f"a digit {i}"}) for i, n in enumerate(files)]
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _errors(encoder: Any, batch: sg.PairBatch) -> dict[int, str]:
    return {i: str(code) for i, code in encoder.embed(batch).errors.items()}


def _finishes(call: Callable[[], Any], seconds: float = 20.0) -> Any:
    """Run ``call`` in a thread; fail (instead of hanging the suite) if it blocks."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = call()
        except BaseException as exc:  # handed back to the test thread
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked (a FIFO opened, or a device read without end)"
    if "error" in out:
        raise out["error"]
    return out.get("value")


# -- 1. symlinks leaving the folder ---------------------------------------------------------


def test_a_symlink_out_of_the_folder_is_an_outside_input_reject(
    tmp_path: Path, pngs: list[bytes], digits_encoder: Any
) -> None:
    """The report's case: innocent.png -> ../private/x.png was read, judged and copied."""
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "x.png").write_bytes(pngs[0])
    root = _folder(tmp_path / "data", {"a.png": pngs[1], "innocent.png": None, "b.png": pngs[2]})
    (root / "innocent.png").symlink_to("../private/x.png")
    batch = read_pairs(root)
    assert isinstance(batch.images[1], SourceFile) and batch.images[1] == str(root / "innocent.png")
    embedded = digits_encoder.embed(batch)
    assert {i: str(c) for i, c in embedded.errors.items()} == {1: "outside_input"}
    assert "private" in embedded.error_details[1] and "follow_symlinks" in embedded.error_details[1]
    with pytest.raises(sg.InvalidInputError, match="outside the input folder"):
        write_pairs(batch.select([1]), tmp_path / "copy.tar", "webdataset")  # never copied
    assert not (tmp_path / "copy.tar").exists()
    # The rules travel with the path to spawned DataLoader workers and Ray tasks.
    moved = pickle.loads(pickle.dumps(batch.images[1]))
    assert isinstance(moved, SourceFile) and moved.root == os.path.realpath(root)
    assert _errors(digits_encoder, sg.PairBatch([moved], ["a digit"])) == {0: "outside_input"}
    opted = read_pairs(root, follow_symlinks=True)
    assert _errors(digits_encoder, opted) == {}


def test_symlinks_inside_the_folder_are_followed(
    tmp_path: Path, pngs: list[bytes], digits_encoder: Any
) -> None:
    root = _folder(tmp_path / "data", {"sub/a.png": None, "alias.png": None, "view/a.png": None})
    (root / "sub").mkdir()
    (root / "sub" / "a.png").write_bytes(pngs[0])
    (root / "alias.png").symlink_to("sub/a.png")
    (root / "view").symlink_to("sub", target_is_directory=True)
    assert _errors(digits_encoder, read_pairs(root)) == {}
    link = tmp_path / "link-to-data"  # the input itself reached through a symlink: the user's
    link.symlink_to(root, target_is_directory=True)
    assert _errors(digits_encoder, read_pairs(link)) == {}


@pytest.mark.parametrize("escape", ["dir", "absolute", "chain", "prefix-sibling"])
def test_every_way_out_is_refused(
    tmp_path: Path, pngs: list[bytes], digits_encoder: Any, escape: str
) -> None:
    outside = tmp_path / ("data2" if escape == "prefix-sibling" else "private")
    outside.mkdir()
    (outside / "x.png").write_bytes(pngs[0])
    root = _folder(tmp_path / "data", {"ok.png": pngs[1], "imgs/x.png": None})
    if escape == "dir":  # a symlinked subfolder
        (root / "imgs").symlink_to(outside, target_is_directory=True)
    else:
        (root / "imgs").mkdir()
        target = {"absolute": str(outside / "x.png"), "prefix-sibling": "../../data2/x.png"}
        if escape == "chain":  # inside -> inside -> outside
            (root / "hop.png").symlink_to("../private/x.png")
            (root / "imgs" / "x.png").symlink_to("../hop.png")
        else:
            (root / "imgs" / "x.png").symlink_to(target[escape])
    assert _errors(digits_encoder, read_pairs(root)) == {1: "outside_input"}


def test_the_check_happens_when_the_file_is_read(
    tmp_path: Path, pngs: list[bytes], digits_encoder: Any
) -> None:
    """A file replaced by a symlink after read_pairs listed it is still refused."""
    (tmp_path / "private.png").write_bytes(pngs[0])
    root = _folder(tmp_path / "data", {"a.png": pngs[1]})
    batch = read_pairs(root)
    (root / "a.png").unlink()
    (root / "a.png").symlink_to(tmp_path / "private.png")
    assert _errors(digits_encoder, batch) == {0: "outside_input"}


def test_caption_files_and_shards_reached_by_symlink_are_refused(
    tmp_path: Path, pngs: list[bytes]
) -> None:
    other = _folder(tmp_path / "other", {"a.png": pngs[0]})
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.png").write_bytes(pngs[1])
    (root / "captions.jsonl").symlink_to(other / "captions.jsonl")
    with pytest.raises(sg.InvalidInputError, match=r"caption file .*outside the input folder"):
        read_pairs(root)
    assert len(read_pairs(root, follow_symlinks=True)) == 1
    shards = tmp_path / "shards"
    shards.mkdir()
    write_pairs(sg.PairBatch([pngs[0]], ["a digit"]), tmp_path / "private.tar", "webdataset")
    write_pairs(sg.PairBatch([pngs[1]], ["a digit"]), shards / "00000.tar", "webdataset")
    (shards / "00001.tar").symlink_to(tmp_path / "private.tar")
    with pytest.raises(sg.InvalidInputError, match=r"tar shard .*00001\.tar.*outside"):
        read_pairs(shards)
    assert len(read_pairs(shards, follow_symlinks=True)) == 2


def test_a_user_encoder_never_receives_a_refused_path(
    tmp_path: Path, pngs: list[bytes], digits_encoder: Any
) -> None:
    (tmp_path / "secret.png").write_bytes(pngs[0])
    root = _folder(tmp_path / "data", {"a.png": pngs[1], "b.png": None})
    (root / "b.png").symlink_to(tmp_path / "secret.png")
    seen: list[Any] = []

    class Recording:  # the Encoder protocol only: it opens paths itself
        dim, device, context_length = digits_encoder.dim, digits_encoder.device, 16
        fingerprint = digits_encoder.fingerprint

        def encode_images(self, images: Any, *, on_error: str = "raise") -> Any:
            seen.extend(images)
            return digits_encoder.encode_images(images, on_error=on_error)

        def encode_texts(self, texts: Any, *, on_error: str = "raise") -> Any:
            return digits_encoder.encode_texts(texts, on_error=on_error)

    result = embed_pairs(Recording(), read_pairs(root))
    assert {i: str(c) for i, c in result.errors.items()} == {1: "outside_input"}
    assert seen == [str(root / "a.png")]


_SEGMENTS = st.sampled_from([".", "..", "sub", "data", "data2", "private", "data/sub"])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(_SEGMENTS, min_size=0, max_size=4), st.booleans())
def test_containment_agrees_with_commonpath(
    tmp_path: Path, parts: list[str], absolute: bool
) -> None:
    """Wherever a symlink leads, it is read if and only if it resolves inside the root."""
    base = tmp_path / "tree"
    if not base.exists():
        for folder in ("data/sub", "data2", "private"):
            (base / folder).mkdir(parents=True)
        for folder in ("data", "data/sub", "data2", "private", "."):
            (base / folder / "f.png").write_bytes(b"content")
    root = base / "data"
    link = root / "sub" / "link.png"
    link.unlink(missing_ok=True)
    target = os.path.join(*parts, "f.png") if parts else "f.png"
    link.symlink_to(os.path.join(base, target) if absolute else target)
    real, real_root = os.path.realpath(link), os.path.realpath(root)
    inside = os.path.commonpath([real, real_root]) == real_root  # an independent oracle
    try:
        data = read_file(link, max_bytes=100, root=root, follow_symlinks=False)
    except FileRefusedError as exc:
        # Outside: refused whether or not the target exists; inside: only a missing target.
        assert exc.reason == (UNREADABLE if inside else OUTSIDE), str(exc)
        assert not inside or not os.path.exists(real)
    else:
        assert inside and data == b"content"


# -- 2. Parquet image strings ---------------------------------------------------------------


def _parquet(path: Path, images: list[Any], **columns: list[Any]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    captions = [f"a digit {i}" for i in range(len(images))]
    pq.write_table(pa.table({"image": images, "caption": captions, **columns}), path)
    return path


def test_parquet_strings_are_not_paths_unless_asked(tmp_path: Path, pngs: list[bytes]) -> None:
    """The report's case: "/abs/secret.png" and "../private/x.png" were opened (from the cwd)."""
    (tmp_path / "secret.png").write_bytes(pngs[0])
    folder = tmp_path / "set"
    folder.mkdir()
    path = _parquet(folder / "p.parquet", [str(tmp_path / "secret.png"), "../secret.png"])
    with pytest.raises(
        sg.InvalidInputError, match=r"row 0.*image_paths=True.*--parquet-image-paths"
    ):
        read_pairs(path)


def test_parquet_image_paths_are_relative_to_the_file_and_contained(
    tmp_path: Path, pngs: list[bytes], digits_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secret.png").write_bytes(pngs[0])
    folder = tmp_path / "set"
    (folder / "imgs").mkdir(parents=True)
    (folder / "imgs" / "ok.png").write_bytes(pngs[1])
    (folder / "link.png").symlink_to(tmp_path / "secret.png")
    values = [str(tmp_path / "secret.png"), "../secret.png", "imgs/ok.png", "link.png", ""]
    path = _parquet(folder / "p.parquet", values)
    monkeypatch.chdir(tmp_path)  # "../secret.png" from here would be another file again
    batch = read_pairs(path, image_paths=True)
    assert [type(i).__name__ for i in batch.images[:3]] == [
        "RefusedImage",
        "RefusedImage",
        "SourceFile",
    ]
    assert _errors(digits_encoder, batch) == {
        0: "outside_input", 1: "outside_input", 3: "outside_input", 4: "unreadable_image"
    }  # fmt: skip
    assert _errors(digits_encoder, read_pairs(path, image_paths=True, follow_symlinks=True)) == {
        0: "outside_input", 1: "outside_input", 4: "unreadable_image"
    }  # fmt: skip


def test_parquet_bytes_structs_and_file_columns_keep_working(
    tmp_path: Path, pngs: list[bytes], digits_encoder: Any
) -> None:
    structs = [{"bytes": pngs[0], "path": "whatever.png"}, {"bytes": pngs[1], "path": None}]
    assert _errors(digits_encoder, read_pairs(_parquet(tmp_path / "s.parquet", structs))) == {}
    assert read_pairs(_parquet(tmp_path / "b.parquet", pngs[:2])).images == pngs[:2]
    (tmp_path / "a.png").write_bytes(pngs[2])
    files = _parquet(tmp_path / "f.parquet", [None, None], file=["a.png", "../../etc/passwd"])
    assert _errors(digits_encoder, read_pairs(files)) == {1: "outside_input"}
    only_path = _parquet(tmp_path / "p.parquet", [{"bytes": None, "path": "a.png"}])
    with pytest.raises(sg.InvalidInputError, match=r"struct's 'path'.*image_paths=True"):
        read_pairs(only_path)
    assert _errors(digits_encoder, read_pairs(only_path, image_paths=True)) == {}


# -- 3. only regular files, bounded reads ---------------------------------------------------


def test_fifos_and_devices_are_refused_without_blocking(
    tmp_path: Path, pngs: list[bytes], digits_encoder: Any
) -> None:
    root = _folder(tmp_path / "data", {"ok.png": pngs[0], "pipe.png": None, "zero.png": None})
    os.mkfifo(root / "pipe.png")  # open() would wait for a writer forever
    (root / "zero.png").symlink_to("/dev/zero")  # read() would never end
    batch = read_pairs(root, follow_symlinks=True)
    embedded = _finishes(lambda: digits_encoder.embed(batch))
    assert {i: str(c) for i, c in embedded.errors.items()} == {
        1: "unreadable_image",
        2: "unreadable_image",
    }
    assert "FIFO" in embedded.error_details[1] and "character device" in embedded.error_details[2]
    with pytest.raises(ImageDecodeError, match="character device"):
        load_image("/dev/zero")  # a plain path the user named: regular files only


def test_caption_files_references_and_logs_that_are_fifos_are_errors(tmp_path: Path) -> None:
    for name in ("data/captions.jsonl", "ref.sgref", "log.jsonl"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        os.mkfifo(tmp_path / name)
    with pytest.raises(sg.InvalidInputError, match="FIFO"):
        _finishes(lambda: read_pairs(tmp_path / "data"))
    with pytest.raises(sg.CorruptFileError, match="FIFO"):
        _finishes(lambda: sg.Reference.load(tmp_path / "ref.sgref"))
    with pytest.raises(sg.CorruptFileError, match="character device"):
        sg.Reference.load("/dev/zero")
    with pytest.raises(sg.InvalidInputError, match="FIFO"):
        _finishes(lambda: sg.CollapseMonitor(tmp_path / "log.jsonl"))


def test_images_over_max_image_bytes_are_rejected_unread(
    tmp_path: Path, pngs: list[bytes], digits_encoder: Any
) -> None:
    big = pngs[0] + b"\0" * 5000  # a valid PNG with trailing bytes: only the size is wrong
    root = _folder(tmp_path / "data", {"small.png": pngs[1], "big.png": big})
    assert _errors(digits_encoder, read_pairs(root)) == {}  # the default is 64 MiB
    embedded = digits_encoder.embed(read_pairs(root, max_image_bytes=4000))
    assert {i: str(c) for i, c in embedded.errors.items()} == {1: "image_too_large"}
    assert "max_image_bytes=3.906 KiB" in embedded.error_details[1]
    write_pairs(sg.PairBatch([big, pngs[1]], ["a", "b"]), tmp_path / "s.tar", "webdataset")
    shard = read_pairs(tmp_path / "s.tar", max_image_bytes=4000)
    assert isinstance(shard.images[0], RefusedImage) and shard.images[1] == pngs[1]
    parquet = read_pairs(_parquet(tmp_path / "p.parquet", [big, pngs[1]]), max_image_bytes=4000)
    assert _errors(digits_encoder, parquet) == {0: "image_too_large"}
    with pytest.raises(sg.InvalidInputError, match="max_image_bytes must be >= 1"):
        read_pairs(root, max_image_bytes=0)


def _sparse_member(name: str, declared: int) -> bytes:
    """A GNU sparse header that declares ``declared`` bytes and stores none of them."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.GNUTYPE_SPARSE
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    header[483:495] = tarfile.itn(declared, 12, tarfile.GNU_FORMAT)  # the real size
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _member(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info.tobuf(format=tarfile.GNU_FORMAT) + data + b"\0" * (-len(data) % 512)


def test_a_sparse_40_gib_member_is_refused_from_its_header(
    tmp_path: Path, pngs: list[bytes], digits_encoder: Any
) -> None:
    """The report's case: a 10 kB shard ended in a raw MemoryError."""
    shard = tmp_path / "s.tar"
    shard.write_bytes(
        _sparse_member("a.png", 40 * 2**30) + _member("a.txt", b"a digit")
        + _member("b.png", pngs[0]) + _member("b.txt", b"a digit") + b"\0" * 1024
    )  # fmt: skip
    assert shard.stat().st_size < 10_000
    batch = read_pairs(shard)
    assert batch.captions == ["a digit", "a digit"] and batch.images[1] == pngs[0]
    embedded = digits_encoder.embed(batch)
    assert {i: str(c) for i, c in embedded.errors.items()} == {0: "image_too_large"}
    assert "40 GiB" in embedded.error_details[0]
    sidecar = tmp_path / "t.tar"
    sidecar.write_bytes(_member("a.png", pngs[0]) + _sparse_member("a.txt", 2**33) + b"\0" * 1024)
    with pytest.raises(sg.InvalidInputError, match=r"member 'a\.txt' has 8 GiB.*at most 16 MiB"):
        read_pairs(sidecar)


def test_link_members_of_a_shard_are_unreadable_not_followed(
    tmp_path: Path, digits_encoder: Any
) -> None:
    link = tarfile.TarInfo("a.png")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    shard = tmp_path / "s.tar"
    shard.write_bytes(link.tobuf(format=tarfile.GNU_FORMAT) + _member("a.txt", b"c") + b"\0" * 1024)
    embedded = digits_encoder.embed(read_pairs(shard))
    assert {i: str(c) for i, c in embedded.errors.items()} == {0: "unreadable_image"}
    assert "not a regular file" in embedded.error_details[0]


# -- 4. decompression bombs after the resize ------------------------------------------------


def test_a_600000_by_1_png_is_image_too_large(digits_encoder: Any) -> None:
    """The report's case: 663 bytes, 600,000 pixels (under max_image_pixels), and the resize of
    its short side to the model's 16 pixels built a 9,600,000x16 image."""
    bomb = _png(Image.new("L", (600_000, 1)))
    assert len(bomb) < 1000
    embedded = digits_encoder.embed(sg.PairBatch([bomb, bomb], ["a digit", "a digit"]))
    assert {i: str(c) for i, c in embedded.errors.items()} == {
        0: "image_too_large",
        1: "image_too_large",
    }
    assert (
        "600000x1" in embedded.error_details[0]
        and "max_image_aspect=100" in embedded.error_details[0]
    )
    relaxed = sg.load_encoder("bundled:digits", max_image_aspect=None, max_image_pixels=None)
    assert relaxed.embed(sg.PairBatch([_png(Image.new("L", (2000, 1)))], ["x"])).errors == {}


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 40), st.booleans())
def test_the_aspect_limit_is_exact(long: int, short: int, tall: bool) -> None:
    array = Image.new("L", (short, long) if tall else (long, short))
    if long / short > 100:
        with pytest.raises(ImageDecodeError) as info:
            load_image(array)
        assert info.value.reason == TOO_LARGE
    else:
        assert load_image(array).size == array.size
