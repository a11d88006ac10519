"""Shared fixtures. Every test runs offline: a socket guard fails any non-loopback connection."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core: one thread each, so two workers do not fight
    # over the cores (oversubscribed, torch ran 15x slower on this 2-core machine).
    import torch

    torch.set_num_threads(1)

_real_connect = socket.socket.connect
NETWORK_ATTEMPTS: list[Any] = []


def _is_local(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) and address else address
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if not _is_local(address):
        NETWORK_ATTEMPTS.append(address)
        raise OSError(f"network access attempted in tests: {address!r}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    yield


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Headless Chromium for the report pages (skips, saying why, where it cannot start)."""
    from _browser import launch

    with launch() as browser:
        yield browser


@pytest.fixture(scope="session")
def tiny_openclip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from _tiny_models import build_openclip_dir

    return build_openclip_dir(tmp_path_factory.mktemp("tiny_openclip"))


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory, tiny_openclip_dir: Path) -> Path:
    """A transformers CLIPModel with exactly the tiny open_clip model's weights."""
    from _tiny_models import build_hf_clip_dir

    return build_hf_clip_dir(tmp_path_factory.mktemp("tiny_hf"), openclip_dir=tiny_openclip_dir)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_openclip_dir: Path) -> Any:
    import synthguard as sg

    return sg.load_encoder(f"openclip:local-dir:{tiny_openclip_dir}", batch_size=8)


@pytest.fixture(scope="session")
def digits_encoder() -> Any:
    import synthguard as sg

    return sg.load_encoder("bundled:digits")
