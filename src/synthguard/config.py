"""``GuardConfig``: every knob of the decision rules, validated, frozen and documented."""

from __future__ import annotations

import difflib
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from synthguard._errors import InvalidInputError
from synthguard._io import read_file
from synthguard.checks import BATCH_TESTS, SAMPLE_CHECKS, BatchTestName, SampleCheckName

__all__ = ["GuardConfig"]


class GuardConfig(BaseModel):
    """Configuration of :class:`~synthguard.Guard`; a misspelled field is an error.

    Thresholds are not set here: they are calibrated on the reference at the error rates
    below. The rules are in docs/design.md ("Decision rules").

    Attributes:
        alpha: target per-sample false-reject rate on real data. The per-sample checks are
            calibrated *jointly*: a real pair fails at least one of them with probability
            ``alpha``.
        alpha_batch: family-wise error rate of the batch tests (Holm's correction): a real
            batch is rejected with probability at most ``alpha_batch``.
        n_resamples: real-vs-real resamples per batch size for the batch tests' null
            distributions. Must allow the smallest Holm level, ``(n_resamples + 1) ·
            alpha_batch / S >= 1`` with ``S`` the family's total weight over its smallest
            (``K`` for ``K`` equal weights; see ``test_weights``). Left at its default, a guard
            raises it to ``S / alpha_batch − 1`` when concept groups and the class mix make
            the family larger than ``batch_tests``; a value you set is checked instead.
        seed: seed of the resamples and of row subsampling; equal seeds give equal reports.
        label_policy: what a calibrated label disagreement does: ``"relabel"`` (take the frozen
            model's label), ``"reject"`` (reason ``label_mismatch``) or ``"keep"`` (record it).
        sample_checks: calibrated per-sample checks to run (:data:`synthguard.checks.
            SAMPLE_CHECKS`). ``label_mismatch`` runs only when the reference and the batch have
            labels; the opt-in ``long_caption`` only when the reference was built from captions.
        batch_tests: batch tests in the Holm family (:data:`synthguard.checks.BATCH_TESTS`:
            collapse risk, drift, duplicates, the reject rate). Every test is reported with its
            p-value; those not listed are informational. Opt-in: ``alignment_variance``.
            ``flag_rate`` (far more per-sample rejects than real data gives) makes the verdict
            ``"excess_rejects"``, which keeps the accepted samples; the others ``"rejected"``.
        test_weights: Holm weights of tests in the family, by name (a batch test,
            ``label_drift`` or ``concept:<group>``); unnamed tests weigh 1. The weighted Holm
            procedure tries a test of weight ``w`` at ``alpha_batch · w / W`` (``W``: the weight
            of the tests not yet tried), so the family-wise error rate stays ``alpha_batch``
            while a heavier test needs less evidence, and a lighter one more. The smallest
            level sets the resamples the nulls need (``n_resamples``). Default: equal weights.
            ``{"flag_rate": 6}`` catches batches with a raised reject rate about as readily as
            a single reject-rate test, for 50 % more resamples (docs/guard.md, "Power against
            known-bad batches").
        class_mix: when the reference has classes (labels and class embeddings), test the
            class mix in the Holm family: the frozen model's predicted classes of the accepted
            samples against the accepted support's (``concept:predicted_class``) and, for
            batches with labels, the given labels against the support's (``label_drift``);
            both name the classes that moved. Turn off when a class mix is chosen on purpose
            (e.g. generating more of the rare classes).
        min_batch_size: fewest embeddable samples for the batch tests; smaller batches get
            per-sample decisions only (the report says so).
        max_batch_rows: most rows the batch metrics use. The tests run at sizes on a
            geometric grid (ratio 2^¼: ..., 362, 431, 512, 609, 724, 861, 1024, ...): a batch
            is subsampled (seeded) to the largest grid size within its accepted rows, this
            cap and half the reference support, so nearby batch sizes share one calibration
            (and every batch above the cap shares one). A larger cap buys power at a
            calibration cost of roughly ``n_resamples × (cap · d²)``
            (about 45 s at 1024 rows, d = 512, on 2 CPU cores, 80 s in one thread;
            docs/benchmarks.md).
        threads: CPU threads the guard's own statistics may use (the batch tests' null runs
            in that many worker threads of one torch thread each; the checks of a batch with
            that many torch threads). Default: a quarter of the available cores, 1 to 4, so
            a guard inside a training job does not fight the trainer for cores.
        device: where the batch tests' null is computed (e.g. ``"cuda"``); default: the
            encoder's device when it is a GPU, else the CPU.

    Example:
        >>> GuardConfig(alpha=0.1).alpha_batch
        0.01
        >>> try:
        ...     GuardConfig(alpah=0.1)
        ... except ValueError as error:
        ...     print("Extra inputs are not permitted" in str(error))
        True
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        # One error type for every bad argument of the public API (InvalidInputError is a
        # ValueError, as pydantic's was): parameter, constraint and value, one per line.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidInputError(_describe(exc)) from None

    alpha: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.05
    alpha_batch: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.01
    n_resamples: Annotated[int, Field(ge=19)] = 1000
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    label_policy: Literal["keep", "relabel", "reject"] = "relabel"
    sample_checks: tuple[SampleCheckName, ...] = cast(
        "tuple[SampleCheckName, ...]", tuple(n for n, c in SAMPLE_CHECKS.items() if c.default)
    )
    batch_tests: tuple[BatchTestName, ...] = cast(
        "tuple[BatchTestName, ...]", tuple(n for n, t in BATCH_TESTS.items() if t.default)
    )
    test_weights: tuple[tuple[str, Annotated[float, Field(gt=0.0, allow_inf_nan=False)]], ...] = ()
    min_batch_size: Annotated[int, Field(ge=2)] = 10
    max_batch_rows: Annotated[int, Field(ge=2)] = 1024
    class_mix: bool = True
    threads: Annotated[int, Field(ge=1)] | None = None
    device: str | None = None

    @field_validator("sample_checks", mode="before")
    @classmethod
    def _near_duplicate_with_copies(cls, value: Any) -> Any:
        # Until 0.1, ``reference_copy`` also ran the within-batch near-duplicate check; a list
        # written then keeps that protection (deprecated: list ``near_duplicate`` explicitly).
        legacy = isinstance(value, (list, tuple)) and "reference_copy" in value
        if legacy and "near_duplicate" not in value:
            warnings.warn(
                "sample_checks lists 'reference_copy' without 'near_duplicate', which is now "
                "a check of its own; it is added, as 'reference_copy' used to imply it (list "
                "it explicitly to silence this warning)",
                FutureWarning,
                stacklevel=2,
            )
            at = list(value).index("reference_copy") + 1
            return (*value[:at], "near_duplicate", *value[at:])
        return value

    @field_validator("test_weights", mode="before")
    @classmethod
    def _weights_by_name(cls, value: Any) -> Any:
        # Given as a mapping (the natural spelling); kept as sorted pairs so the config stays
        # hashable and its JSON stable.
        if isinstance(value, Mapping):
            value = tuple(sorted(value.items()))
        if isinstance(value, (list, tuple)):
            for item in value:
                name = item[0] if isinstance(item, (list, tuple)) and item else item
                known = name in BATCH_TESTS or name == "label_drift"
                if not (known or (isinstance(name, str) and name.startswith("concept:"))):
                    raise ValueError(
                        "test_weights keys must be batch tests "
                        f"({', '.join(BATCH_TESTS)}), 'label_drift' or 'concept:<group>'; "
                        f"got {name!r}"
                    )
        return value

    def test_weight(self, name: str) -> float:
        """The Holm weight of the test ``name`` (1 unless ``test_weights`` names it)."""
        return dict(self.test_weights).get(name, 1.0)

    def holm_span(self, names: Sequence[str]) -> float:
        """Total weight over smallest weight of the family ``names``: the smallest Holm level
        is ``alpha_batch / holm_span`` (``len(names)`` with equal weights)."""
        weights = [self.test_weight(n) for n in names]
        return sum(weights) / min(weights) if weights else 0.0

    def resamples_needed(self, names: Sequence[str]) -> int:
        """The fewest ``n_resamples`` whose resampling p-value reaches the smallest Holm level
        of the family ``names``: ``(R + 1) · alpha_batch / holm_span >= 1``."""
        span = self.holm_span(names)
        return max(0, math.ceil(span / self.alpha_batch - 1e-9) - 1) if span else 0

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                torch.device(value)
            except (RuntimeError, TypeError) as error:
                raise ValueError(f"device must be a torch device string; {error}") from None
        return value

    @model_validator(mode="after")
    def _check_family(self) -> GuardConfig:
        if not self.sample_checks:
            raise ValueError("sample_checks must name at least one check")
        for name in ("sample_checks", "batch_tests"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} must not repeat entries; got {list(values)}")
        # Left at its default, n_resamples is raised to what the family needs (GuardPlan).
        explicit = "n_resamples" in self.model_fields_set
        needed = self.resamples_needed(self.batch_tests)
        if explicit and self.n_resamples < needed:
            span = self.holm_span(self.batch_tests)
            raise ValueError(
                f"n_resamples must be >= {needed} so the smallest Holm level alpha_batch/"
                f"{span:g} = {self.alpha_batch / span:.2g} is reachable by a resampling "
                f"p-value; got {self.n_resamples}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict of the fields."""
        return self.model_dump(mode="json")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> GuardConfig:
        """A configuration from a YAML (``.yaml``, ``.yml``) or JSON (``.json``) file whose keys
        are the fields; ``overrides`` win over the file (the CLI's explicit flags).

        YAML is read with ``yaml.safe_load`` (no tags, no objects); a key given twice, an
        unknown key, a wrong type or a bad value raises, naming the file, the key, the
        constraint and the value.

        Raises:
            InvalidInputError: the file cannot be read or parsed, or a value is invalid.

        Example:
            >>> import json, pathlib, tempfile
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "guard.json"
            >>> _ = path.write_text(json.dumps({"alpha": 0.1, "seed": 3}))
            >>> config = GuardConfig.from_file(path, seed=4)
            >>> config.alpha, config.seed
            (0.1, 4)
        """
        values = read_config_file(path)
        where = {key: f"{os.fspath(path)}: key {key!r}" for key in values}
        where.update({key: f"{key} (overriding {os.fspath(path)})" for key in overrides})
        return config_from({**values, **overrides}, where, os.fspath(path))


#: Largest configuration file read (a configuration is a few hundred bytes).
_MAX_CONFIG_BYTES = 1 << 20


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The key/value mapping of a YAML or JSON configuration file, not yet validated.

    Raises:
        InvalidInputError: an unknown suffix, an unreadable file, a syntax error, a key given
            twice, or a document that is not a mapping of names.
    """
    name = os.fspath(path)
    suffix = Path(name).suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise InvalidInputError(
            f"a configuration file must end in .yaml, .yml or .json; got {name!r}"
        )
    text = read_file(path, max_bytes=_MAX_CONFIG_BYTES, what="configuration file")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{name} is not UTF-8 text (byte {exc.start})") from None
    document = _load_json(decoded, name) if suffix == ".json" else _load_yaml(decoded, name)
    if document is None:  # an empty YAML document: no keys, every default
        return {}
    if not isinstance(document, dict):
        raise InvalidInputError(
            f"{name} must hold a mapping of GuardConfig fields (key: value); got a "
            f"{type(document).__name__}"
        )
    for key in document:
        if not isinstance(key, str):
            raise InvalidInputError(f"{name}: keys must be GuardConfig field names; got {key!r}")
    return document


def config_from(values: dict[str, Any], where: dict[str, str], source: str = "") -> GuardConfig:
    """``GuardConfig(**values)``; an error names each bad key as ``where`` says it came in, and
    a rule across fields the ``source`` (a file name)."""
    unknown = [key for key in values if key not in GuardConfig.model_fields]
    if unknown:
        key = unknown[0]
        near = difflib.get_close_matches(key, list(GuardConfig.model_fields), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise InvalidInputError(
            f"{where.get(key, key)} is not a GuardConfig field{hint}; the fields are "
            + ", ".join(GuardConfig.model_fields)
        )
    config = GuardConfig.__new__(GuardConfig)
    try:  # pydantic's own __init__: GuardConfig's would word the errors without ``where``
        BaseModel.__init__(config, **values)
    except ValidationError as exc:
        raise InvalidInputError(_describe(exc, where, source)) from None
    return config


def _load_json(text: str, name: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise InvalidInputError(f"{name}: key {key!r} is given twice")
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{name} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None


def _load_yaml(text: str, name: str) -> Any:
    import yaml  # a dependency (transformers needs it too); imported when a file is read

    class _Loader(yaml.SafeLoader):  # safe_load's loader, refusing a key given twice
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
        seen: set[str] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise InvalidInputError(
                        f"{name}: key {key.value!r} is given twice (line {key.start_mark.line + 1})"
                    )
                seen.add(key.value)
        return loader.construct_mapping(node)

    _Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=_Loader)  # safe: safe_load's loader, one check more
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = "" if mark is None else f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInputError(f"{name} is not valid YAML: {problem}{at}") from None


def _describe(error: ValidationError, where: dict[str, str] | None = None, source: str = "") -> str:
    lines = []
    for item in error.errors():
        loc = item["loc"]
        message = str(item["msg"]).removeprefix("Value error, ")
        value = item.get("input")
        if where is not None and loc:  # from a file: "guard.yaml: key 'alpha' must be ..."
            at = "".join(f"[{part}]" for part in loc[1:])
            key = str(loc[0])
            origin = where.get(key, key)
            origin = origin.replace(repr(key), repr(key + at)) if at else origin
            message = message.replace("Input should be", "must be", 1)
            lines.append(f"{origin} {message}; got {value!r}")
        elif loc:  # a field: its constraint and the value received
            lines.append(f"{'.'.join(str(part) for part in loc)}: {message}; got {value!r}")
        else:  # a rule across fields: its message names them
            lines.append(f"{source}: {message}" if source else message)
    return "invalid GuardConfig: " + "; ".join(lines)
