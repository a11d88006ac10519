"""Relabeling with a frozen grounding model (docs/relabel.md).

Three tools, all scored by a frozen image–text encoder grounded on real data:

- :class:`ZeroShotLabeler` predicts class labels from class-name prompts (with prompt
  ensembling); :func:`resolve_labels` turns given labels + predictions + a policy
  (``"keep"`` / ``"relabel"`` / ``"reject"``) into per-sample :class:`LabelDecision` objects.
- :func:`rerank_captions` picks the best-aligned of N given candidate captions per image
  (best-of-N, the "decoding budget" mitigation) and reports the gain over the first.
- :class:`Recaptioner` has a generative captioner (BLIP, GIT, any transformers image-to-text
  model, or a function) propose K captions and replaces the current caption only when the best
  one aligns better by at least ``min_gain`` (CapFilt).

Every proposed change comes with a :class:`Relabel` record: old value, new value, both scores,
and whether it was applied. See ``docs/relabel.md``.
"""

from synthguard.relabel._common import Relabel
from synthguard.relabel._decisions import LABEL_POLICIES, LabelDecision, LabelPolicy, resolve_labels
from synthguard.relabel._recaption import Captioner, Recaptioner
from synthguard.relabel._rerank import CaptionChoice, RerankResult, rerank_captions
from synthguard.relabel._zeroshot import DEFAULT_LOGIT_SCALE, ZeroShotLabeler, ZeroShotPrediction

__all__ = [
    "DEFAULT_LOGIT_SCALE",
    "LABEL_POLICIES",
    "CaptionChoice",
    "Captioner",
    "LabelDecision",
    "LabelPolicy",
    "Recaptioner",
    "Relabel",
    "RerankResult",
    "ZeroShotLabeler",
    "ZeroShotPrediction",
    "rerank_captions",
    "resolve_labels",
]
