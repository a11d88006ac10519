"""What both HTML pages share: the Jinja2 templates, thumbnails, the sample table, the summary.

Pages are Jinja2 templates (``report/_templates``, shipped as package data) rendered with
autoescaping on: every caption, id and reason is escaped by the template, and only the charts
(SVG that matplotlib escaped itself) are marked safe. A page is one self-contained file:
inline CSS, SVG charts, thumbnails as ``data:`` URIs and a few lines of inline JavaScript.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from markupsafe import Markup

from synthguard._reasons import ReasonCode
from synthguard.batch import PairBatch

if TYPE_CHECKING:
    import jinja2

    from synthguard.relabel import Relabel

__all__ = [
    "SampleLike",
    "SampleRow",
    "SampleTable",
    "label_text",
    "render_page",
    "sample_table",
    "thumbnail",
]

#: Longest side of a thumbnail, in pixels (small images are kept as they are).
THUMBNAIL_SIDE = 48
#: Characters of a caption shown in the table (the whole caption is its tooltip).
CAPTION_CHARS = 90


#: One short phrase per reason code, for the summary a reviewer reads first.
class SampleLike(Protocol):
    """What the table reads of a :class:`~synthguard.SampleDecision`."""

    @property
    def index(self) -> int: ...
    @property
    def id(self) -> int | str: ...
    @property
    def accepted(self) -> bool: ...
    @property
    def reasons(self) -> Sequence[ReasonCode]: ...
    @property
    def details(self) -> Sequence[str]: ...
    @property
    def scores(self) -> Mapping[str, float]: ...
    @property
    def new_caption(self) -> str | None: ...
    @property
    def new_label(self) -> int | None: ...
    @property
    def relabels(self) -> Sequence[Relabel]: ...
    @property
    def partners(self) -> Mapping[str, int]: ...


@dataclass(frozen=True)
class SampleRow:
    """One row of the sample table, every value a plain string the template escapes."""

    index: int
    id: str
    accepted: bool
    thumbnail: str | None  # a data: URI
    caption: str | None
    new_caption: str | None
    given_label: str | None
    new_label: str | None  # only when the guard changed it
    label_note: str | None  # a disagreement the label policy kept
    reasons: tuple[tuple[str, str], ...]  # (code, sentence)
    partners: tuple[tuple[str, int | None], ...]  # (words, index of the row to link or None)
    alignment: str

    @property
    def codes(self) -> str:
        """Space-separated reason codes (what the table's filter matches)."""
        return " ".join(code for code, _ in self.reasons)


@dataclass(frozen=True)
class SampleTable:
    """The rows shown (rejected first), how many there are in all, and the filter's choices."""

    rows: tuple[SampleRow, ...]
    total: int
    rejected: int
    reasons: tuple[str, ...]
    has_images: bool

    @property
    def note(self) -> str:
        """Why some samples are not shown ("" when all are)."""
        if len(self.rows) == self.total:
            return ""
        first = "every rejected sample" if self.rejected <= len(self.rows) else "rejected samples"
        return (f"Showing the first {len(self.rows)} of {self.total} samples ({first} first) to "
                "keep this page small; the JSON report (--out, GuardReport.to_json) has every "
                "sample.")  # fmt: skip


@cache
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("synthguard.report", "_templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_page(template: str, **context: Any) -> str:
    """Render ``template`` (a file of ``report/_templates``); ``charts`` values are SVG."""
    charts = {k: Markup(v) for k, v in context.pop("charts", {}).items()}
    return (
        _environment()
        .get_template(template)
        .render(charts=charts, caption_chars=CAPTION_CHARS, **context)
    )


def thumbnail(item: Any) -> str | None:
    """A small PNG (or JPEG for large photos) of ``item`` as a ``data:`` URI; ``None`` when it
    cannot be read (the sample's reasons say why)."""
    from synthguard.encoders import load_image

    try:
        image = load_image(item)
    except Exception:  # an unreadable image is a reason in the table, not a broken page
        return None
    buffer = io.BytesIO()
    if max(image.size) <= THUMBNAIL_SIDE:
        image.save(buffer, format="PNG", optimize=True)
        kind = "png"
    else:
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        image.save(buffer, format="JPEG", quality=75)
        kind = "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def label_text(value: object, names: Sequence[str] | None) -> str | None:
    """A class label as ``name (index)`` when the reference names its classes."""
    if value is None:
        return None
    if names and isinstance(value, int) and 0 <= value < len(names):
        return f"{names[value]} ({value})"
    return str(value)


def _caption(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else repr(value)


def _partners(sample: SampleLike, shown: set[int]) -> tuple[tuple[str, int | None], ...]:
    out: list[tuple[str, int | None]] = []
    for code, other in sample.partners.items():
        if code == ReasonCode.NEAR_DUPLICATE:
            out.append((f"repeats sample #{other}", other if other in shown else None))
        elif code == ReasonCode.REFERENCE_COPY:
            out.append((f"copies reference support image {other}", None))
    return tuple(out)


def sample_table(
    samples: Sequence[SampleLike],
    batch: PairBatch | None,
    *,
    label_names: Sequence[str] | None,
    max_rows: int,
) -> SampleTable:
    """The table's rows: rejected samples first (in batch order), then accepted ones, at most
    ``max_rows``; thumbnails, captions and given labels come from ``batch`` when given."""
    ordered = sorted(samples, key=lambda s: (s.accepted, s.index))[:max_rows]
    shown = {s.index for s in ordered}
    repeated_by: dict[int, list[int]] = {}
    for s in samples:
        if ReasonCode.NEAR_DUPLICATE in s.partners:
            repeated_by.setdefault(s.partners[ReasonCode.NEAR_DUPLICATE], []).append(s.index)
    rows = []
    for s in ordered:
        label = next((r for r in s.relabels if r.field == "label"), None)
        given: object = s.new_label if label is None or not label.applied else label.old_value
        if batch is not None and batch.labels is not None:
            given = batch.labels[s.index]
        changed = label is not None and label.applied
        note = None
        if label is not None and not label.applied:
            note = f"kept; the model says {label_text(label.new_value, label_names)}"
        partners = _partners(s, shown) + tuple(
            (f"repeated by sample #{j}", j if j in shown else None)
            for j in repeated_by.get(s.index, [])
        )
        alignment = s.scores.get("alignment", math.nan)
        rows.append(
            SampleRow(
                index=s.index,
                id=str(s.id),
                accepted=s.accepted,
                thumbnail=None if batch is None else thumbnail(batch.images[s.index]),
                caption=None if batch is None else _caption(batch.captions[s.index]),
                new_caption=s.new_caption,
                given_label=label_text(given, label_names),
                new_label=label_text(s.new_label, label_names) if changed else None,
                label_note=note,
                reasons=tuple(
                    (str(code), detail.split(": ", 1)[-1])
                    for code, detail in zip(s.reasons, s.details, strict=False)
                ),
                partners=partners,
                alignment="—" if not math.isfinite(alignment) else f"{alignment:.3f}",
            )
        )
    codes = sorted({str(code) for s in samples for code in s.reasons})
    return SampleTable(
        rows=tuple(rows),
        total=len(samples),
        rejected=sum(not s.accepted for s in samples),
        reasons=tuple(codes),
        has_images=batch is not None,
    )
