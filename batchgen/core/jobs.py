"""Jobs: what one generation request is, how it is keyed, and the states it moves through."""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

KEY_LENGTH = 16
_KEY_BYTES = KEY_LENGTH // 2  # the first 16 hex digits of the SHA-256 are its first 8 bytes


class JobStatus(StrEnum):
    """Where a job stands. The order of the comments is the order of a happy life."""

    PENDING = "pending"  # planned; nothing has been sent for it
    SUBMITTING = "submitting"  # intent committed, enqueue POST may have reached the server: reconcile first
    UNKNOWN = "unknown"  # an enqueue whose outcome could not be decided; the user chooses (resume --resubmit-unknown)
    QUEUED = "queued"  # enqueued, generation_id known, not yet running remotely
    PROCESSING = "processing"  # running remotely
    DOWNLOADING = "downloading"  # remote succeeded (paid for); the file is not on disk yet
    SUCCEEDED = "succeeded"  # remote succeeded and the file is on disk (or downloads are off)
    FAILED = "failed"  # remote or permanent client-side failure; see error / error_class
    CANCELLED = "cancelled"  # cancelled by the user (batchgen cancel) or remotely

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def _canonical_encoder() -> Callable[[Any], str]:
    """`json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)`, made once.

    `json.dumps` with arguments builds a new encoder, and its C scanner, on every call: a third of the cost of
    keying a million jobs. The C encoder is built here with exactly the arguments `dumps` would give it, so the
    text is the same (tests/manifest/test_keys_pinned.py pins it); without the C accelerator, `dumps` it is.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return lambda value: json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    markers: dict[int, Any] = {}  # the circular-reference check, as dumps does it
    encode = make(markers, str, json.encoder.encode_basestring, None, ":", ",", True, False, True)

    def canonical(value: Any) -> str:
        try:
            return "".join(encode(value, 0))
        except BaseException:
            markers.clear()  # an error leaves the containers it was inside marked
            raise

    return canonical


_encode_canonically = _canonical_encoder()


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the same value always gives the same text."""
    return _encode_canonically(value)


def exact_key(value: Any) -> Hashable:
    """A hashable stand-in for `value` for caches of verdicts: two values share it only when they are the same
    JSON value of the same Python type (`1`, `1.0`, `True` and `"1"` are all equal or alike somewhere in Python,
    and a schema tells every one of them apart)."""
    kind = type(value)
    if kind is str:
        text: str = value
        return text  # no other kind of value below is a str
    if kind is int or kind is bool or value is None:
        return (kind, value)
    if kind is float:
        return (kind, repr(value))  # -0.0 == 0.0, yet the request says which
    return (kind, canonical_json(value))


def job_key(model: str, params: Mapping[str, Any], repeat: int) -> str:
    """The stable identity of a job: the same model, final parameters and repeat index give the same key,
    whatever the order of keys in the manifest."""
    text = _encode_canonically(
        {"model": model, "params": params if type(params) is dict else dict(params), "repeat": repeat}
    )
    return hashlib.sha256(text.encode("utf-8")).digest()[:_KEY_BYTES].hex()


_encode_string = json.encoder.encode_basestring  # what the canonical encoder writes for a str
_concatenate = operator.add


class KeyMaker:
    """`job_key` for many jobs of one model whose parameters have the same names: the canonical text is put
    together from pieces encoded once (the sorted names, the model), so only the values are encoded per job.
    The bytes are `job_key`'s (tests/manifest/test_keys_pinned.py); parameters of other names, or values other
    than strings, are keyed by `job_key` itself."""

    def __init__(self, model: str, names: Iterable[str]) -> None:
        self.model = model
        self.order = tuple(sorted(names))  # as json's sort_keys orders them
        self.labels = tuple(json.encoder.encode_basestring(name) + ":" for name in self.order)
        self.head = '{"model":' + json.encoder.encode_basestring(model) + ',"params":{'

    def key(self, params: Mapping[str, Any], repeat: int) -> str:
        """The job key of `model` with `params` and `repeat`."""
        if len(params) != len(self.order):
            return job_key(self.model, params, repeat)
        try:
            values = map(_encode_string, map(params.__getitem__, self.order))
            body = ",".join(map(_concatenate, self.labels, values))
        except (KeyError, TypeError):  # another name; a value that is not a string
            return job_key(self.model, params, repeat)
        text = f'{self.head}{body}}},"repeat":{int(repeat)}}}'
        return hashlib.sha256(text.encode("utf-8")).digest()[:_KEY_BYTES].hex()


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One planned generation: exactly what will be sent (model + params) and where it came from."""

    model: str
    params: Mapping[str, Any]  # the request body minus `model`: prompt and every model parameter
    repeat: int = 0  # sample index among identical requests, 0-based
    variables: Mapping[str, Any] = field(default_factory=dict)  # template variables, kept as result columns
    origin: str = ""  # file:line of the manifest entry that produced the job
    key: str = ""  # derived from model, params and repeat when left empty

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", job_key(self.model, self.params, self.repeat))

    @property
    def prompt(self) -> str:
        value = self.params.get("prompt", "")
        return value if isinstance(value, str) else canonical_json(value)


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as it stands in the store: the value export, report and status work from.

    Times are timezone-aware UTC datetimes (or None); cost is USD as a float (None when unknown).
    """

    job_key: str
    run: str
    model: str
    params: Mapping[str, Any]
    variables: Mapping[str, Any]
    repeat: int
    status: JobStatus
    generation_id: str | None = None
    result_url: str | None = None
    output_path: str | None = None  # as stored: relative to the run's output directory's parent when possible
    sha256: str | None = None
    bytes: int | None = None
    estimated_cost: float | None = None
    cost: float | None = None
    error: str | None = None
    error_class: str | None = None
    attempts: int = 0
    intent_at: Any = None  # datetime | None
    enqueued_at: Any = None
    started_at: Any = None
    completed_at: Any = None
    media_type: str = "video"  # 'video' or 'image'
    downloaded_by: str | None = None  # the host whose output directory holds the file

    @property
    def prompt(self) -> str:
        value = self.params.get("prompt", "")
        return value if isinstance(value, str) else canonical_json(value)
