"""Zero-shot labels from a frozen grounding encoder (the keep / relabel / reject rule that acts on
them is :mod:`synthguard.relabel._decisions`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from synthguard._errors import InvalidInputError
from synthguard._validation import check_float, describe, unit_rows_or_nan
from synthguard.batch import as_sample_list
from synthguard.encoders._base import Encoder
from synthguard.relabel._common import encoder_dim

__all__ = ["DEFAULT_LOGIT_SCALE", "ZeroShotLabeler", "ZeroShotPrediction"]

#: CLIP's trained temperature saturates at 100; used when the encoder exposes none.
DEFAULT_LOGIT_SCALE = 100.0


class ZeroShotPrediction(BaseModel):
    """Per-sample zero-shot predictions of a :class:`ZeroShotLabeler`.

    Attributes:
        labels: ``[n]`` int64 predicted class; ``-1`` for a sample without a finite embedding.
        confidence: ``[n]`` float64 softmax probability of the predicted class (NaN if none).
        margin: ``[n]`` float64 cosine of the top class minus that of the runner-up (NaN if
            none). Unlike ``confidence`` it does not depend on the logit scale.
        scores: ``[n, C]`` float64 cosine of each image to each class prompt embedding.
        label_names: the class names, ``label_names[c]`` for class ``c``.
        logit_scale: the temperature used for ``confidence``.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    labels: torch.Tensor
    confidence: torch.Tensor
    margin: torch.Tensor
    scores: torch.Tensor
    label_names: tuple[str, ...]
    logit_scale: float

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def valid(self) -> torch.Tensor:
        """``[n]`` bool: the sample got a prediction."""
        return self.labels >= 0

    @property
    def probabilities(self) -> torch.Tensor:
        """``[n, C]`` softmax over classes of ``logit_scale * scores`` (NaN rows stay NaN)."""
        return torch.softmax(self.logit_scale * self.scores, dim=1)

    def names(self) -> list[str | None]:
        """The predicted class names (``None`` where there is no prediction)."""
        return [self.label_names[c] if c >= 0 else None for c in self.labels.tolist()]


class ZeroShotLabeler:
    """Class labels predicted by a frozen image–text encoder from class-name prompts.

    Each class is represented by its prompts (every template filled in with the class name),
    embedded by the encoder, L2-normalised, averaged and renormalised: CLIP's prompt
    ensembling (Radford et al. 2021, §3.1.4). The class embeddings are computed on first use
    and cached; an image's label is the class of highest cosine.

    Args:
        encoder: the frozen grounding encoder (anything implementing
            :class:`~synthguard.encoders.Encoder`); ``None`` when ``class_embeddings`` are
            given and only embeddings will be classified (:meth:`predict`).
        label_names: one name per class, ``label_names[c]`` for class ``c`` (non-empty, unique,
            at least two).
        templates: prompt templates, each containing ``{name}``; a single string is one template.
        logit_scale: softmax temperature for ``confidence``. ``None`` reads the model's own
            trained ``logit_scale`` (``exp`` of the stored log scale, as in open_clip and
            transformers CLIP) and falls back to 100.
        class_embeddings: optional ``[C, dim]`` class embeddings computed earlier (e.g. stored
            in a :class:`~synthguard.Reference`), used instead of embedding the prompts, so a
            loaded reference classifies exactly as it did when it was calibrated.

    Raises:
        InvalidInputError: a bad ``label_names``, ``templates`` or ``logit_scale``.

    Example:
        >>> import synthguard as sg
        >>> from synthguard.datasets import DIGIT_NAMES, load_digits
        >>> enc = sg.load_encoder("bundled:digits")
        >>> labeler = ZeroShotLabeler(enc, DIGIT_NAMES, templates="a handwritten digit {name}")
        >>> test = load_digits("test")
        >>> pred = labeler.predict(enc.encode_images(test.images[:4]))
        >>> pred.names() == [DIGIT_NAMES[y] for y in test.labels[:4]]
        True
    """

    def __init__(
        self,
        encoder: Encoder | None,
        label_names: Sequence[str],
        templates: str | Sequence[str] = ("a photo of a {name}",),
        logit_scale: float | None = None,
        class_embeddings: Any = None,
    ) -> None:
        if encoder is None and class_embeddings is None:
            raise InvalidInputError(
                "encoder must be an Encoder when class_embeddings are not given; got None"
            )
        self.encoder = encoder
        self.label_names = _check_label_names(label_names)
        self.templates = _check_templates(templates)
        self.logit_scale = (
            None
            if logit_scale is None
            else check_float("logit_scale", logit_scale, low=0.0, low_open=True)
        )
        self._class_embeddings: torch.Tensor | None = None
        if class_embeddings is not None:
            dim = encoder_dim(encoder) if encoder is not None else _columns(class_embeddings)
            rows = unit_rows_or_nan(
                "class_embeddings", class_embeddings, dim, n=len(self.label_names)
            )
            if bool(torch.isnan(rows).any()):
                raise InvalidInputError("class_embeddings must be finite, non-zero rows")
            self._class_embeddings = rows.to(torch.float32)

    @property
    def prompts(self) -> list[list[str]]:
        """``prompts[c][t]``: template ``t`` filled in with class ``c``'s name."""
        return [[t.format(name=name) for t in self.templates] for name in self.label_names]

    @property
    def class_embeddings(self) -> torch.Tensor:
        """``[C, dim]`` float32 unit rows: the ensembled prompt embedding of each class."""
        if self._class_embeddings is None:
            self._class_embeddings = self._embed_prompts()
        return self._class_embeddings

    @property
    def effective_logit_scale(self) -> float:
        """The temperature actually used: the argument, the model's own, or 100."""
        if self.logit_scale is not None:
            return self.logit_scale
        return _model_logit_scale(self.encoder) or DEFAULT_LOGIT_SCALE

    def predict(self, image_embeddings: Any) -> ZeroShotPrediction:
        """Predict a class for each image embedding.

        Args:
            image_embeddings: ``[n, dim]`` embeddings from the same encoder. Rows that are NaN
                (samples the encoder could not embed) give label ``-1`` and NaN confidence and
                margin instead of an error.

        Returns:
            A :class:`ZeroShotPrediction`.
        """
        classes = self.class_embeddings.to(torch.float64)
        x = unit_rows_or_nan("image_embeddings", image_embeddings, classes.shape[1])
        scores = x @ classes.T  # NaN rows stay NaN
        n = x.shape[0]
        labels = torch.full((n,), -1, dtype=torch.int64)
        confidence = torch.full((n,), math.nan, dtype=torch.float64)
        margin = torch.full((n,), math.nan, dtype=torch.float64)
        valid = ~torch.isnan(scores).any(dim=1)
        scale = self.effective_logit_scale
        if bool(valid.any()):
            s = scores[valid]
            top = s.argmax(dim=1)  # first index on ties
            two = s.topk(2, dim=1).values
            labels[valid] = top
            margin[valid] = two[:, 0] - two[:, 1]
            confidence[valid] = torch.softmax(scale * s, dim=1).gather(1, top[:, None])[:, 0]
        return ZeroShotPrediction(
            labels=labels,
            confidence=confidence,
            margin=margin,
            scores=scores,
            label_names=self.label_names,
            logit_scale=scale,
        )

    def predict_images(self, images: Any) -> ZeroShotPrediction:
        """Embed ``images`` with the encoder (bad ones become NaN rows) and :meth:`predict`."""
        encoder = self._require_encoder("predict_images")
        return self.predict(encoder.encode_images(as_sample_list(images, "images"), on_error="nan"))

    def _require_encoder(self, what: str) -> Encoder:
        if self.encoder is None:
            raise InvalidInputError(
                f"{what} needs an encoder; this labeler was built from class_embeddings only"
            )
        return self.encoder

    def _embed_prompts(self) -> torch.Tensor:
        prompts = [p for row in self.prompts for p in row]
        encoder = self._require_encoder("embedding the prompts")
        dim = encoder_dim(encoder)
        raw = encoder.encode_texts(prompts, on_error="nan")
        emb = unit_rows_or_nan("encoder.encode_texts output", raw, dim, n=len(prompts))
        bad = torch.nonzero(torch.isnan(emb).any(dim=1)).flatten().tolist()
        if bad:
            raise InvalidInputError(
                f"the encoder could not embed prompt {prompts[bad[0]]!r}; every prompt must "
                f"embed ({len(bad)} of {len(prompts)} failed)"
            )
        # Normalise each prompt, average per class, renormalise (in float64).
        mean = emb.reshape(len(self.label_names), len(self.templates), dim).mean(dim=1)
        return torch.nn.functional.normalize(mean, dim=1).to(torch.float32)

    def __repr__(self) -> str:
        return (
            f"ZeroShotLabeler(classes={len(self.label_names)}, templates={len(self.templates)}, "
            f"logit_scale={self.logit_scale})"
        )


def _check_label_names(value: Any) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidInputError(
            f"label_names must be a sequence of class-name strings; got {describe(value)}"
        )
    names = tuple(value)
    if len(names) < 2:
        raise InvalidInputError(
            f"label_names must name at least two classes (zero-shot picks among them); "
            f"got {describe(list(names))}"
        )
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(
                f"label_names must be non-empty strings; label_names[{i}] = {describe(name)}"
            )
        if name in seen:
            raise InvalidInputError(
                f"label_names must be unique; label_names[{i}] = {name!r} repeats "
                f"label_names[{seen[name]}]"
            )
        seen[name] = i
    return names


def _check_templates(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Sequence) or not value:
        raise InvalidInputError(
            f"templates must be a non-empty sequence of strings containing '{{name}}'; "
            f"got {describe(value)}"
        )
    out: list[str] = []
    for i, template in enumerate(value):
        if not isinstance(template, str) or "{name}" not in template:
            raise InvalidInputError(
                f"templates must each contain '{{name}}'; templates[{i}] = {describe(template)}"
            )
        try:
            template.format(name="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise InvalidInputError(
                f"templates may use only the '{{name}}' field (escape braces as '{{{{'); "
                f"templates[{i}] = {template!r} fails: {type(exc).__name__}: {exc}"
            ) from exc
        out.append(template)
    return tuple(out)


def _columns(value: Any) -> int:
    """The column count of a 2-D array-like (its embedding dim), or -1 (refused later)."""
    try:
        shape = np.shape(value)
    except (ValueError, TypeError):  # ragged nested lists
        return -1
    return int(shape[1]) if len(shape) == 2 else -1


def _model_logit_scale(encoder: Any) -> float | None:
    """``exp(logit_scale)`` of an open_clip / transformers module, if the encoder exposes one."""
    raw = getattr(getattr(encoder, "module", None), "logit_scale", None)
    if isinstance(raw, torch.Tensor) and raw.numel() == 1:
        value = float(raw.detach().to("cpu", torch.float64).exp())
        if math.isfinite(value) and value > 0:
            return value
    return None
