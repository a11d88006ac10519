"""Generative re-captioning, CapFilt style: K generated captions, kept only if better aligned."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from PIL import Image

from synthguard._errors import EncoderError, InvalidInputError
from synthguard._reasons import ReasonCode
from synthguard._validation import check_float, check_int, describe, unit_rows_or_nan
from synthguard.batch import as_sample_list
from synthguard.encoders._base import Encoder
from synthguard.encoders._device import resolve_device
from synthguard.encoders._images import ImageDecodeError, load_image
from synthguard.relabel._captioner import resolve_captioner
from synthguard.relabel._common import (
    Relabel,
    caption_text,
    encoder_dim,
    score_texts,
)
from synthguard.relabel._rerank import best_index

__all__ = ["Captioner", "Recaptioner"]

#: A captioning function: ``(RGB images, num_candidates) -> candidate captions per image``.
Captioner = Callable[[list[Image.Image], int], Sequence[Sequence[str]]]


class Recaptioner:
    """Re-caption images with a generative model, filtered by a frozen grounding encoder.

    For each image the captioner proposes ``num_candidates`` captions (beam search with that
    many returned beams, or seeded sampling); the frozen encoder scores every candidate and the
    current caption against the image; the best candidate replaces the current caption only if
    ``best - current >= min_gain`` (the CapFilt rule of BLIP, Li et al. 2022, with the frozen
    model as the filter). An empty or unembeddable current caption is replaced by any usable
    candidate. Every sample gets a :class:`~synthguard.relabel.Relabel` record, applied or not.

    Args:
        model: a transformers image-to-text model object (BLIP, GIT, any ``generate``-capable
            vision-to-text model), ``"hf:PATH_OR_ID"`` (loaded with
            ``AutoModelForImageTextToText``, falling back to BLIP, plus ``AutoProcessor``), or
            a plain function ``(images, num_candidates) -> list of caption lists`` (any other
            captioner, e.g. an API-served VLM).
        processor: the model's processor (or a path to load one from); for a model object
            without one, its ``name_or_path`` folder is tried.
        num_candidates: K, candidates per image (the decoding budget).
        num_beams: beams for beam search (default K; at least K). With sampling, default 1.
        do_sample: sample instead of beam search (seeded, see ``seed``).
        temperature: sampling temperature (> 0), used only when sampling.
        top_p: nucleus sampling mass in (0, 1], used only when sampling.
        max_new_tokens: longest generated caption, in tokens.
        min_gain: δ ≥ 0, the least cosine improvement that justifies a replacement.
        batch_size: images per ``generate`` call.
        seed: sampling seed; batch ``b`` uses ``seed + b`` inside a forked RNG, so the global
            torch RNG is untouched and results repeat for the same ``batch_size``.
        prompt: optional text prefix for conditional captioning (e.g. ``"a picture of"``).
        device: where the captioner runs (default: the grounding encoder's device).
        generate_kwargs: extra keyword arguments for ``model.generate``.

    Raises:
        InvalidInputError: a bad argument (message names it, the constraint and the value).
        EncoderLoadError: ``"hf:..."`` could not be loaded.

    Example:
        >>> import synthguard as sg
        >>> from synthguard.datasets import load_digits
        >>> enc = sg.load_encoder("bundled:digits")
        >>> test = load_digits("test")  # test.labels[:2] == [1, 4]
        >>> def captioner(images, k):   # any function can stand in for a model
        ...     return [["a handwritten digit one", "a handwritten digit four"]] * len(images)
        >>> recap = Recaptioner(captioner, num_candidates=2, min_gain=0.05)
        >>> records = recap.recaption(test.images[:2], ["a handwritten digit five"] * 2, enc)
        >>> [(r.applied, r.new_value) for r in records]
        [(True, 'a handwritten digit one'), (True, 'a handwritten digit four')]
    """

    def __init__(
        self,
        model: Any,
        processor: Any = None,
        *,
        num_candidates: int = 4,
        num_beams: int | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float | None = None,
        max_new_tokens: int = 20,
        min_gain: float = 0.02,
        batch_size: int = 16,
        seed: int = 0,
        prompt: str | None = None,
        device: str | torch.device | None = None,
        generate_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.num_candidates = check_int("num_candidates", num_candidates, minimum=1)
        if not isinstance(do_sample, bool):
            raise InvalidInputError(f"do_sample must be a bool; got {describe(do_sample)}")
        self.do_sample = do_sample
        default_beams = 1 if do_sample else self.num_candidates
        beams = default_beams if num_beams is None else check_int("num_beams", num_beams, minimum=1)
        if beams > 1 and beams < self.num_candidates:
            raise InvalidInputError(
                f"num_beams must be >= num_candidates={self.num_candidates} (each returned "
                f"caption is a distinct beam); got num_beams={beams}"
            )
        if not do_sample and beams == 1 and self.num_candidates > 1:
            raise InvalidInputError(
                f"num_candidates={self.num_candidates} needs beam search (num_beams >= "
                "num_candidates) or do_sample=True; greedy decoding gives one caption"
            )
        self.num_beams = beams
        self.temperature = check_float("temperature", temperature, low=0.0, low_open=True)
        self.top_p = (
            None if top_p is None else check_float("top_p", top_p, low=0.0, high=1.0, low_open=True)
        )
        self.max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1)
        self.min_gain = check_float("min_gain", min_gain, low=0.0)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.seed = check_int("seed", seed)
        if prompt is not None and not isinstance(prompt, str):
            raise InvalidInputError(f"prompt must be a string or None; got {describe(prompt)}")
        self.prompt = prompt
        self.device = None if device is None else resolve_device(device)
        if generate_kwargs is not None and not isinstance(generate_kwargs, dict):
            raise InvalidInputError(
                f"generate_kwargs must be a dict or None; got {describe(generate_kwargs)}"
            )
        self.generate_kwargs = dict(generate_kwargs or {})
        self.model, self.processor, self.generator = resolve_captioner(model, processor)

    # -- public --------------------------------------------------------------------------------
    def generate_candidates(self, images: Any) -> list[list[str]]:
        """K candidate captions per image (``[]`` for an image that cannot be read).

        Example:
            >>> Recaptioner(lambda ims, k: [["a cat"] * k] * len(ims), num_candidates=2,
            ...     ).generate_candidates([b"not an image"])
            [[]]
        """
        items = as_sample_list(images, "images")
        pils, _ = _decode(items)
        order = sorted(pils)
        generated = self._generate([pils[i] for i in order], self.device)
        found = dict(zip(order, generated, strict=True))
        return [
            [c if isinstance(c, str) else "" for c in found.get(i, [])] for i in range(len(items))
        ]

    def recaption(
        self,
        images: Any,
        current_captions: Any,
        encoder: Encoder,
        image_embeddings: Any = None,
    ) -> list[Relabel]:
        """Propose new captions and apply the ``min_gain`` rule, with provenance per sample.

        Args:
            images: one image per sample, in any form :func:`~synthguard.encoders.load_image`
                reads; an unreadable one gets ``error="unreadable_image"``, not an exception.
            current_captions: the caption each sample has now (``None`` or empty allowed).
            encoder: the frozen grounding encoder that scores captions against images.
            image_embeddings: optional ``[n, dim]`` embeddings of ``images`` from ``encoder``
                (saves re-embedding); NaN rows mark samples to skip.

        Returns:
            One :class:`~synthguard.relabel.Relabel` per sample (``field="caption"``,
            ``method="recaption"``): the current and proposed caption, both cosines, all
            candidates with their cosines, and whether the proposal was applied.
        """
        items = as_sample_list(images, "images")
        current = as_sample_list(current_captions, "current_captions")
        n = len(items)
        if len(current) != n:
            raise InvalidInputError(
                f"current_captions must have one entry per image ({n}); got {len(current)}"
            )
        dim = encoder_dim(encoder)
        pils, failures = _decode(items)
        if image_embeddings is not None:
            emb = unit_rows_or_nan("image_embeddings", image_embeddings, dim, n=n)
            missing = ReasonCode.UNREADABLE_IMAGE
        else:
            emb = torch.full((n, dim), math.nan, dtype=torch.float64)
            order = sorted(pils)
            if order:
                raw = encoder.encode_images([pils[i] for i in order], on_error="nan")
                emb[order] = unit_rows_or_nan(
                    "encoder.encode_images output", raw, dim, n=len(order)
                )
            missing = ReasonCode.ENCODING_FAILED
        todo = [i for i in sorted(pils) if not bool(torch.isnan(emb[i]).any())]
        generated = self._generate([pils[i] for i in todo], self.device or _device_of(encoder))
        candidates = dict(zip(todo, generated, strict=True))
        old = [caption_text(c) for c in current]
        rows = [
            [old[i], *map(caption_text, candidates[i])] if i in candidates else [] for i in range(n)
        ]
        scores = score_texts(encoder, emb, rows)
        return [
            self._decide(
                i, current[i], rows[i], scores[i], candidates.get(i), failures.get(i), missing
            )
            for i in range(n)
        ]

    # -- internals -----------------------------------------------------------------------------
    def _decide(
        self,
        i: int,
        current: Any,
        row: list[str | None],
        scores: list[float],
        raw: list[Any] | None,
        failure: str | None,
        missing: ReasonCode,
    ) -> Relabel:
        """The provenance record of sample ``i``: ``row`` is [current, *candidates] as text."""
        old = caption_text(current)
        base: dict[str, Any] = {
            "index": i,
            "field": "caption",
            "method": "recaption",
            # Keep what the sample had, even "" (the record must show the empty caption).
            "old_value": old
            if old is not None
            else (current if isinstance(current, str) else None),
            "generator": self.generator,
        }
        if raw is None:  # never captioned: unreadable image or no finite embedding
            return Relabel(
                **base,
                new_value=None,
                old_score=math.nan,
                new_score=math.nan,
                applied=False,
                reason=failure or "the image has no finite embedding; not re-captioned",
                error=ReasonCode.UNREADABLE_IMAGE if failure else missing,
            )
        current_score, cand_scores = scores[0], scores[1:]
        base["old_score"] = current_score
        base["candidates"] = tuple(c if isinstance(c, str) else "" for c in raw)
        base["candidate_scores"] = tuple(cand_scores)
        best = best_index(cand_scores)
        if best is None:
            reason = f"the captioner produced no usable caption ({len(raw)} candidates)"
            return Relabel(**base, new_value=None, new_score=math.nan, applied=False, reason=reason)
        new, new_score = row[1 + best], cand_scores[best]
        gain = new_score - current_score
        if not math.isfinite(current_score):
            applied = True
            reason = "the current caption is empty or could not be embedded; replaced"
        elif new == old:
            applied, reason = False, "the best candidate is the current caption"
        else:
            applied = gain >= self.min_gain
            cmp, verb = (">=", "replaced") if applied else ("<", "kept")
            reason = f"gain {gain:+.4f} {cmp} min_gain {self.min_gain:g}; {verb}"
        return Relabel(**base, new_value=new, new_score=new_score, applied=applied, reason=reason)

    def _generate(self, images: list[Image.Image], device: torch.device | None) -> list[list[Any]]:
        # Seed the RNG of the device the model will actually run on.
        target = device if device is not None else _device_of(self.model)
        out: list[list[Any]] = []
        for b, start in enumerate(range(0, len(images), self.batch_size)):
            chunk = images[start : start + self.batch_size]
            try:
                with _seeded(self.seed + b, target):
                    got = self._generate_batch(chunk, target)
            except (InvalidInputError, EncoderError):
                raise
            except Exception as exc:
                raise EncoderError(
                    f"captioner {self.generator!r} failed on a batch of {len(chunk)} images: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            out.extend(got)
        return out

    def _generate_batch(self, chunk: list[Image.Image], device: torch.device) -> list[list[Any]]:
        k = self.num_candidates
        if self.processor is None:  # a plain captioning function
            result = self.model(chunk, k)
            if not isinstance(result, Sequence) or len(result) != len(chunk):
                raise InvalidInputError(
                    f"the captioner must return one list of captions per image ({len(chunk)}); "
                    f"got {describe(result)}"
                )
            if any(isinstance(r, str) or not isinstance(r, Sequence) for r in result):
                raise InvalidInputError("the captioner must return a list of captions per image")
            return [list(r) for r in result]
        model = self._on(device)
        text = {"text": [self.prompt] * len(chunk)} if self.prompt is not None else {}
        inputs = dict(self.processor(images=chunk, return_tensors="pt", **text))
        dtype = getattr(model, "dtype", None)
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor):
                cast = (
                    dtype if value.is_floating_point() and isinstance(dtype, torch.dtype) else None
                )
                inputs[name] = value.to(device=_device_of(model), dtype=cast)
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "num_return_sequences": k,
            "do_sample": self.do_sample,
        }
        if self.do_sample:
            kwargs["temperature"] = self.temperature
            if self.top_p is not None:
                kwargs["top_p"] = self.top_p
        with torch.inference_mode():
            ids = model.generate(**inputs, **{**kwargs, **self.generate_kwargs})
        ids = getattr(ids, "sequences", ids)  # return_dict_in_generate=True
        if ids.shape[0] != len(chunk) * k:
            raise EncoderError(
                f"generate returned {ids.shape[0]} sequences for {len(chunk)} images x {k}"
            )
        ids = _strip_prompt(ids, inputs.get("input_ids"), k)
        decode = (
            getattr(self.processor, "batch_decode", None) or self.processor.tokenizer.batch_decode
        )
        texts = [t.strip() for t in decode(ids, skip_special_tokens=True)]
        return [texts[j * k : (j + 1) * k] for j in range(len(chunk))]

    def _on(self, device: torch.device) -> Any:
        if _device_of(self.model) != device:
            self.model.to(device)
        return self.model

    def __repr__(self) -> str:
        mode = f"sampling(seed={self.seed})" if self.do_sample else f"beams={self.num_beams}"
        return (
            f"Recaptioner({self.generator!r}, num_candidates={self.num_candidates}, {mode}, "
            f"min_gain={self.min_gain:g})"
        )


def _decode(items: list[Any]) -> tuple[dict[int, Image.Image], dict[int, str]]:
    pils: dict[int, Image.Image] = {}
    failures: dict[int, str] = {}
    for i, item in enumerate(items):
        try:
            pils[i] = load_image(item)
        except ImageDecodeError as exc:
            failures[i] = str(exc)
    return pils, failures


def _device_of(obj: Any) -> torch.device:
    """An encoder's ``.device``, a module's parameter device, else CPU."""
    device = getattr(obj, "device", None)
    if isinstance(device, torch.device):
        return device
    params = getattr(obj, "parameters", None)
    if callable(params):
        first = next(iter(params()), None)
        if isinstance(first, torch.Tensor):
            return first.device
    return torch.device("cpu")


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed sampling without disturbing the caller's global RNG streams."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def _strip_prompt(ids: torch.Tensor, input_ids: Any, k: int) -> torch.Tensor:
    """Drop the echoed prompt that decoder-only VLMs return in front of the caption."""
    if not isinstance(input_ids, torch.Tensor) or ids.shape[1] < input_ids.shape[1]:
        return ids
    prefix = input_ids.repeat_interleave(k, dim=0).to(ids.device)
    if torch.equal(ids[:, : prefix.shape[1]], prefix):
        return ids[:, prefix.shape[1] :]
    return ids
