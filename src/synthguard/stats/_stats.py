"""Mergeable sufficient statistics of embeddings (docs/design.md, "Invariants").

:class:`EmbeddingStats` keeps float64 sums (never means), counts, a fixed-edge histogram of
image–caption alignment and a bottom-k sample of rows, so that statistics computed on shards,
processes or machines combine *exactly*: ``stats(A).merge(stats(B))`` equals ``stats(A ∪ B)`` up
to float64 rounding of the sums, and its sample is identical. Every batch-level metric in
:mod:`synthguard.functional` can be computed from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from synthguard._errors import IncompatibleStatsError, InvalidInputError
from synthguard._validation import (
    as_embeddings,
    check_edges,
    check_int,
    check_labels,
    check_same_device,
    check_same_rows,
    describe,
    normalize_rows,
)
from synthguard.stats._bottomk import Sample, bottom_k, pack, sample_keys, unpack
from synthguard.stats._collective import all_gather_same, all_reduce_sum
from synthguard.stats._moments import Moments

__all__ = ["EmbeddingStats", "Modality"]

Modality = Literal["image", "text"]
FORMAT_VERSION = 1
_MODALITIES: tuple[Modality, ...] = ("image", "text")
_CONFIG_KEYS = ("format_version", "dim", "sample_size", "seed", "num_labels", "hist_edges")
_SAMPLE_SUFFIXES = ("", "_keys", "_tiebreak", "_labels")
_DEFAULT_EDGES = (-1.0, 1.0, 201)  # 200 bins of width 0.01 over the cosine range


class EmbeddingStats:
    """Mergeable statistics of image and caption embeddings (a commutative monoid).

    State, all exact under :meth:`merge`: per modality the count and float64 sums of ``x`` and
    ``xxᵀ``; over image–caption pairs the count, sum of ``image − text`` (modality gap), sums
    of the cosine alignment and its square and a fixed-edge histogram of it; label counts; and
    per modality a bottom-k sample of rows, those with the smallest 64-bit key. The key of a
    row is ``hash(id, seed)`` when ``ids`` are given, else a hash of the row's content and the
    seed, so a merged sample equals the one-pass sample either way (ids decide membership when
    given; identical rows without ids share a key, so they enter or leave the sample together).

    Args:
        dim: embedding dimension ``d``.
        fingerprint: opaque encoder fingerprint digest; ``None`` means unknown. Merging
            statistics with different non-``None`` fingerprints raises.
        sample_size: rows kept per modality in the bottom-k sample (0 disables it).
        seed: sampling seed (``0 <= seed < 2**63``).
        num_labels: number of classes; needed to pass ``labels`` to :meth:`update`.
        hist_edges: strictly increasing alignment histogram edges (default: 201 edges on
            ``[-1, 1]``); values outside fall into the end bins.
        count_tables: named count tables and their shapes (e.g. concept counts per group and
            class), added to with :meth:`update_counts` and summed by :meth:`merge`.

    Example:
        >>> import torch
        >>> x = torch.nn.functional.normalize(torch.randn(10, 4), dim=1)
        >>> a = EmbeddingStats.from_embeddings(x[:6], x[:6], ids=range(6))
        >>> b = EmbeddingStats.from_embeddings(x[6:], x[6:], ids=range(6, 10))
        >>> a.merge(b).image.count
        10
    """

    def __init__(
        self,
        dim: int,
        *,
        fingerprint: str | None = None,
        sample_size: int = 1024,
        seed: int = 0,
        num_labels: int | None = None,
        hist_edges: Any = None,
        count_tables: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        self.dim = check_int("dim", dim, minimum=1)
        if fingerprint is not None and (not isinstance(fingerprint, str) or not fingerprint):
            raise InvalidInputError(
                f"fingerprint must be a non-empty str or None, got {describe(fingerprint)}"
            )
        self.fingerprint = fingerprint
        self.sample_size = check_int("sample_size", sample_size, minimum=0)
        self.seed = check_int("seed", seed, minimum=0)
        if self.seed >= 2**63:
            raise InvalidInputError(f"seed must be < 2**63, got {self.seed}")
        self.num_labels = (
            None if num_labels is None else check_int("num_labels", num_labels, minimum=1)
        )
        self.hist_edges = check_edges("hist_edges", hist_edges, default=_DEFAULT_EDGES)
        self.count_tables = _check_tables(count_tables)
        self._state = {
            name: torch.zeros(shape, dtype=torch.float64)
            for name, shape in self._sum_shapes().items()
        }
        for m in _MODALITIES:
            self._state[f"{m}_sample"] = torch.zeros(0, self.dim, dtype=torch.float64)
            for suffix in _SAMPLE_SUFFIXES[1:]:
                self._state[f"{m}_sample{suffix}"] = torch.zeros(0, dtype=torch.int64)

    @classmethod
    def from_embeddings(
        cls,
        image_emb: Any = None,
        text_emb: Any = None,
        labels: Any = None,
        ids: Any = None,
        **config: Any,
    ) -> EmbeddingStats:
        """Statistics of one set of embeddings; ``config`` takes the constructor's keywords."""
        given = image_emb if image_emb is not None else text_emb
        if given is None:
            raise InvalidInputError(
                "from_embeddings needs image_emb, text_emb or both; got neither"
            )
        shape = getattr(given, "shape", None) or np.shape(given)
        if len(shape) != 2:
            raise InvalidInputError(f"embeddings must be 2-D [n, d], got shape {tuple(shape)}")
        return cls(int(shape[1]), **config).update(image_emb, text_emb, labels=labels, ids=ids)

    # -- accumulation ----------------------------------------------------------------------

    def update(
        self, image_emb: Any = None, text_emb: Any = None, labels: Any = None, ids: Any = None
    ) -> EmbeddingStats:
        """Add a batch of rows (image-only, text-only or row-aligned pairs); returns ``self``.

        Args:
            image_emb: ``[n, dim]`` image embeddings or ``None``.
            text_emb: ``[n, dim]`` caption embeddings or ``None``; with ``image_emb``, row ``i``
                of both is one pair and feeds the alignment and modality-gap sums.
            labels: ``[n]`` integer class labels in ``[0, num_labels)``, or ``None``.
            ids: ``n`` sample ids (int, str or bytes) keying the bottom-k sample, or ``None``.
        """
        if image_emb is None and text_emb is None:
            raise InvalidInputError("update needs image_emb, text_emb or both; got neither")
        img, txt = (
            None if e is None else as_embeddings(name, e, min_rows=0, dim=self.dim)
            for name, e in (("image_emb", image_emb), ("text_emb", text_emb))
        )
        if img is not None and txt is not None:
            check_same_rows("image_emb", img, "text_emb", txt)
            check_same_device("image_emb", img, "text_emb", txt)
        n = (img if img is not None else txt).shape[0]  # type: ignore[union-attr]
        if labels is not None and self.num_labels is None:
            raise InvalidInputError("labels were given but num_labels is None; set num_labels")
        lab = None if labels is None else check_labels("labels", labels, n, self.num_labels or 0)
        # Everything that can fail (zero-norm rows, bad ids) runs before the state changes, so
        # a rejected batch leaves the statistics untouched.
        cos = None
        if img is not None and txt is not None and n:
            cos = (normalize_rows("image_emb", img) * normalize_rows("text_emb", txt)).sum(dim=1)
            cos = cos.clamp(-1.0, 1.0).cpu()
        keys = sample_keys(self.seed, img, txt, lab, ids, n) if self.sample_size and n else None
        s = self._state
        for m, x in zip(_MODALITIES, (img, txt), strict=True):
            if x is not None:
                s[f"{m}_count"] += n
                s[f"{m}_sum"] += x.sum(dim=0).cpu()
                s[f"{m}_sum_outer"] += (x.T @ x).cpu()
                if keys is not None:
                    old = [s[f"{m}_sample{suffix}"] for suffix in _SAMPLE_SUFFIXES]
                    new = [x.cpu(), *keys]
                    self._store_sample(m, *(torch.cat(p) for p in zip(old, new, strict=True)))
        if cos is not None:
            s["pair_count"] += n
            s["pair_sum_diff"] += (img - txt).sum(dim=0).cpu()  # type: ignore[operator]
            s["align_sum"] += cos.sum()
            s["align_sum_sq"] += (cos * cos).sum()
            bins = torch.bucketize(cos, self.hist_edges[1:-1], right=True)
            s["align_hist"] += torch.bincount(bins, minlength=s["align_hist"].numel()).double()
        if lab is not None and n:
            s["label_counts"] += torch.bincount(lab, minlength=self.num_labels or 0).double()
        return self

    def merge(self, other: EmbeddingStats) -> EmbeddingStats:
        """A new :class:`EmbeddingStats` of both inputs' rows (associative and commutative).

        Raises:
            IncompatibleStatsError: different non-``None`` fingerprints, or a different
                ``dim``, ``sample_size``, ``seed``, ``num_labels`` or ``hist_edges``.
        """
        if not isinstance(other, EmbeddingStats):
            raise InvalidInputError(f"other must be an EmbeddingStats, got {describe(other)}")
        if self.fingerprint and other.fingerprint and self.fingerprint != other.fingerprint:
            raise IncompatibleStatsError(
                f"cannot merge statistics of different encoders: fingerprint "
                f"{self.fingerprint!r} != {other.fingerprint!r}"
            )
        for name in ("dim", "sample_size", "seed", "num_labels", "count_tables"):
            if getattr(self, name) != getattr(other, name):
                raise IncompatibleStatsError(
                    f"cannot merge statistics with different {name}: "
                    f"{getattr(self, name)} != {getattr(other, name)}"
                )
        if not torch.equal(self.hist_edges, other.hist_edges):
            raise IncompatibleStatsError("cannot merge statistics with different hist_edges")
        out = self._empty_like(self.fingerprint or other.fingerprint)
        for name in self._sum_shapes():
            out._state[name] = self._state[name] + other._state[name]
        for m in _MODALITIES:
            parts = [
                tuple(st._state[f"{m}_sample{x}"] for x in _SAMPLE_SUFFIXES) for st in (self, other)
            ]
            out._store_sample(m, *(torch.cat(p) for p in zip(*parts, strict=True)))
        return out

    # -- read-only views -------------------------------------------------------------------

    @property
    def image(self) -> Moments:
        """Moments of all image rows (count, sum, sum of outer products; mean, covariance)."""
        return self._moments("image")

    @property
    def text(self) -> Moments:
        """Moments of all caption rows."""
        return self._moments("text")

    @property
    def n_pairs(self) -> int:
        """Number of image–caption pairs seen (rows updated with both modalities)."""
        return int(self._state["pair_count"])

    @property
    def pair_mean_diff(self) -> torch.Tensor:
        """``[d]`` mean of ``image − text`` over pairs (the modality-gap vector)."""
        if not self.n_pairs:
            raise InvalidInputError("the modality gap needs at least 1 image–caption pair, got 0")
        return self._state["pair_sum_diff"] / self.n_pairs

    @property
    def alignment_sums(self) -> tuple[int, float, float]:
        """``(n_pairs, Σ cos, Σ cos²)`` of the per-pair alignment."""
        s = self._state
        return self.n_pairs, float(s["align_sum"]), float(s["align_sum_sq"])

    @property
    def alignment_histogram(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(edges [b+1], counts [b])`` of the per-pair alignment."""
        return self.hist_edges.clone(), self._state["align_hist"].clone()

    @property
    def label_counts(self) -> torch.Tensor:
        """``[num_labels]`` float64 label counts (empty when ``num_labels`` is ``None``)."""
        return self._state["label_counts"].clone()

    def sample(self, modality: Modality = "image") -> torch.Tensor:
        """``[k, d]`` float64 bottom-k sample of rows of one modality, ordered by key."""
        return self._state[f"{_check_modality(modality)}_sample"].clone()

    def sample_labels(self, modality: Modality = "image") -> torch.Tensor:
        """``[k]`` int64 labels of :meth:`sample` rows (``-1`` where none was given)."""
        return self._state[f"{_check_modality(modality)}_sample_labels"].clone()

    def update_counts(self, name: str, counts: Any) -> EmbeddingStats:
        """Add non-negative integer ``counts`` to the count table ``name``; returns ``self``."""
        if name not in self.count_tables:
            raise InvalidInputError(
                f"name must be one of the count tables {sorted(self.count_tables)}; got {name!r}"
            )
        value = torch.as_tensor(counts).detach().cpu()
        shape = self.count_tables[name]
        if tuple(value.shape) != shape or value.is_floating_point() or bool((value < 0).any()):
            raise InvalidInputError(
                f"counts for {name!r} must be non-negative integers of shape {shape}; got "
                f"{describe(counts)}"
            )
        self._state[f"counts/{name}"] += value.double()
        return self

    def counts(self, name: str) -> torch.Tensor:
        """The float64 count table ``name`` (exact integers)."""
        if name not in self.count_tables:
            raise InvalidInputError(
                f"name must be one of the count tables {sorted(self.count_tables)}; got {name!r}"
            )
        return self._state[f"counts/{name}"].clone()

    # -- serialisation ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Configuration and state as tensors only (safe for ``safetensors.torch.save_file``)."""
        fp = (self.fingerprint or "").encode("utf-8")
        out = {
            "format_version": torch.tensor(FORMAT_VERSION, dtype=torch.int64),
            "dim": torch.tensor(self.dim, dtype=torch.int64),
            "sample_size": torch.tensor(self.sample_size, dtype=torch.int64),
            "seed": torch.tensor(self.seed, dtype=torch.int64),
            "num_labels": torch.tensor(-1 if self.num_labels is None else self.num_labels),
            "hist_edges": self.hist_edges.clone(),
            "fingerprint": torch.tensor(list(fp), dtype=torch.uint8),
        }
        out.update({k: v.clone().contiguous() for k, v in self._state.items()})
        return out

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> EmbeddingStats:
        """Rebuild statistics from :meth:`state_dict`; validates keys, dtypes and shapes."""
        if not isinstance(state, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            raise InvalidInputError(f"state must map names to tensors, got {describe(state)}")
        config_keys = {*_CONFIG_KEYS, "fingerprint"}
        if config_keys - set(state):
            raise InvalidInputError(f"state is missing keys {sorted(config_keys - set(state))}")
        version = int(state["format_version"])
        if version != FORMAT_VERSION:
            raise InvalidInputError(f"state format_version must be {FORMAT_VERSION}, got {version}")
        num_labels = int(state["num_labels"])
        tables = {
            k[len("counts/") :]: tuple(v.shape) for k, v in state.items() if k.startswith("counts/")
        }
        out = cls(
            int(state["dim"]),
            fingerprint=bytes(state["fingerprint"].tolist()).decode("utf-8") or None,
            sample_size=int(state["sample_size"]),
            seed=int(state["seed"]),
            num_labels=None if num_labels < 0 else num_labels,
            hist_edges=state["hist_edges"],
            count_tables=tables,
        )
        expected = set(out._state) | config_keys
        if set(state) != expected:
            raise InvalidInputError(
                f"state is missing keys {sorted(expected - set(state))} and has unknown keys "
                f"{sorted(set(state) - expected)}"
            )
        for name, template in out._state.items():
            value = state[name]
            ok_shape = value.shape == template.shape or (
                "sample" in name
                and value.shape[1:] == template.shape[1:]
                and value.shape[0] <= out.sample_size
            )
            if value.dtype != template.dtype or not ok_shape:
                raise InvalidInputError(
                    f"state[{name!r}] must be {template.dtype} of shape {tuple(template.shape)} "
                    f"(samples: up to sample_size rows), got {describe(value)}"
                )
            out._state[name] = value.clone()
        for m in _MODALITIES:
            fields = [out._state[f"{m}_sample{x}"] for x in _SAMPLE_SUFFIXES]
            if len({f.shape[0] for f in fields}) != 1:
                raise InvalidInputError(f"state {m}_sample* fields have different lengths")
            out._store_sample(m, *fields)  # re-sorting restores the canonical order
        return out

    # -- distributed support: every sum field is float64 and flattens into one vector ------

    def all_reduce(self, group: Any = None) -> EmbeddingStats:
        """Merge every rank's statistics in place (torch.distributed); returns ``self``.

        One ``all_reduce`` of all sum fields flattened into one float64 vector, plus one
        ``all_gather`` of the bottom-k samples: afterwards every rank holds exactly what one
        process would have computed on the concatenated data (the same sample, the same sums
        up to float64 rounding of their order). Every rank must call it, with statistics of the
        same configuration. gloo for CPU, NCCL for CUDA.
        """
        self.load_flat_sums(all_reduce_sum(self.flat_sums(), group))
        if self.sample_size:
            self.load_packed_samples(all_gather_same(self.pack_samples(), group))
        return self

    def flat_sums(self) -> torch.Tensor:
        """All sum fields (counts, sums, histograms, tables) as one float64 vector.

        The vector's merge rule is addition: the flat sums of a merge are the sum of the
        inputs' flat sums (what an all-reduce or a torchmetrics ``"sum"`` state needs).
        """
        return torch.cat([t.reshape(-1) for t in self._sum_fields().values()])

    def load_flat_sums(self, flat: torch.Tensor) -> None:
        """Replace the sum fields by ``flat`` (the inverse of :meth:`flat_sums`)."""
        offset = 0
        fields = self._sum_fields()
        total = sum(t.numel() for t in fields.values())
        if flat.numel() != total:
            raise InvalidInputError(f"flat must have {total} entries, got {flat.numel()}")
        for name, tensor in fields.items():
            size = tensor.numel()
            self._state[name] = (
                flat[offset : offset + size].reshape(tensor.shape).to(tensor).clone()
            )
            offset += size

    def pack_samples(self) -> torch.Tensor:
        """``[2, sample_size, dim + 4]`` int64: both modalities' bottom-k samples, padded.

        Rows travel as their exact float64 bits, then key, tiebreak, label and a validity
        flag; :meth:`load_packed_samples` merges any number of such tensors exactly.
        """
        return pack([self._sample(m) for m in _MODALITIES], self.sample_size, self.dim)

    def load_packed_samples(self, parts: Sequence[torch.Tensor]) -> None:
        """Set the samples to the bottom-k of packed ``parts`` (sums untouched)."""
        for m, modality in enumerate(_MODALITIES):
            self._store_sample(modality, *unpack(parts, m, self.dim))

    def _sum_fields(self) -> dict[str, torch.Tensor]:
        """The float64 sum fields, in a fixed order (live tensors)."""
        return {name: self._state[name] for name in self._sum_shapes()}

    # -- internals -------------------------------------------------------------------------

    def _sum_shapes(self) -> dict[str, tuple[int, ...]]:
        d = self.dim
        return {
            "image_count": (), "image_sum": (d,), "image_sum_outer": (d, d),
            "text_count": (), "text_sum": (d,), "text_sum_outer": (d, d),
            "pair_count": (), "pair_sum_diff": (d,),
            "align_sum": (), "align_sum_sq": (), "align_hist": (self.hist_edges.numel() - 1,),
            "label_counts": (self.num_labels or 0,),
            **{f"counts/{name}": shape for name, shape in self.count_tables.items()},
        }  # fmt: skip

    def _empty_like(self, fingerprint: str | None) -> EmbeddingStats:
        return EmbeddingStats(
            self.dim, fingerprint=fingerprint, sample_size=self.sample_size, seed=self.seed,
            num_labels=self.num_labels, hist_edges=self.hist_edges,
            count_tables=self.count_tables,
        )  # fmt: skip

    def _moments(self, m: Modality) -> Moments:
        s = self._state
        return Moments(int(s[f"{m}_count"]), s[f"{m}_sum"].clone(), s[f"{m}_sum_outer"].clone())

    def _sample(self, m: str) -> Sample:
        return tuple(self._state[f"{m}_sample{x}"] for x in _SAMPLE_SUFFIXES)  # type: ignore[return-value]

    def _store_sample(
        self, m: str, rows: torch.Tensor, keys: torch.Tensor, tiebreak: torch.Tensor,
        labels: torch.Tensor,
    ) -> None:  # fmt: skip
        kept = bottom_k((rows, keys, tiebreak, labels), self.sample_size)
        for suffix, value in zip(_SAMPLE_SUFFIXES, kept, strict=True):
            self._state[f"{m}_sample{suffix}"] = value.contiguous()

    def __repr__(self) -> str:
        return (
            f"EmbeddingStats(dim={self.dim}, fingerprint={self.fingerprint!r}, "
            f"images={self.image.count}, texts={self.text.count}, pairs={self.n_pairs})"
        )


def _check_tables(tables: Mapping[str, Sequence[int]] | None) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for name, shape in dict(tables or {}).items():
        dims = tuple(int(x) for x in shape)
        if not isinstance(name, str) or not name or any(x < 1 for x in dims) or not dims:
            raise InvalidInputError(
                f"count_tables must map names to shapes of positive sizes; got {name!r}: {shape!r}"
            )
        out[name] = dims
    return dict(sorted(out.items()))


def _check_modality(modality: Any) -> Modality:
    if modality not in _MODALITIES:
        raise InvalidInputError(f"modality must be 'image' or 'text', got {modality!r}")
    return modality
