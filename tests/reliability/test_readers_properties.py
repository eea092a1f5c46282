"""Property tests of the readers of every file the tool trusts: any content is a valid result or a named error.

Manifests (JSONL, CSV, Parquet), their meta.json, journals, calibrations, feature headers, a bundle's
oodfilter.json and YAML configs get random bytes, random JSON (or YAML) structures, and valid files
mutated: truncated, bytes flipped, fields removed or of the wrong type, integers too long for Python,
NaN and infinities, deep nesting. Each read must return (a checked value) or raise an
:class:`~oodfilter.errors.OODFilterError`; it runs under a time limit (a hang fails) and a cap on the
memory Python allocates meanwhile.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import signal
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from oodfilter.decision import Calibration
from oodfilter.errors import OODFilterError
from oodfilter.sinks.features import FeatureHeader, read_header
from oodfilter.sinks.journal import JournalEntry, JournalHeader, entry_problem, read_journal
from oodfilter.sinks.manifest import read_manifest, read_meta, sidecar
from oodfilter.sinks.rows import COLUMNS, ManifestRow
from oodfilter.sinks.safe_paths import Fingerprint

# Few examples each (OODFILTER_PROPERTY_EXAMPLES asks for more), no deadline flakiness on a loaded machine: the
# time limit below catches a hang.
PROPERTY = settings(max_examples=int(os.environ.get("OODFILTER_PROPERTY_EXAMPLES", "40")), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
TIME_LIMIT_S = 10
MEMORY_LIMIT = 64 << 20  # bytes Python may allocate while reading one file of at most a few hundred KiB
HUGE = "9" * 5000  # more digits than Python converts to an int
_HUGE_MARK = "\x01huge-int\x01"


@contextlib.contextmanager
def _bounded() -> Iterator[None]:
    """Fail a read that runs past TIME_LIMIT_S (SIGALRM) or allocates more than MEMORY_LIMIT."""
    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the read ran past {TIME_LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
    tracemalloc.start()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT, f"the read allocated {peak} bytes"


def _outcome(read: Callable[[], Any]) -> Any:
    """The reader's result, or None when it raised a named error; any other exception fails the test."""
    with _bounded():
        try:
            return read()
        except OODFilterError as error:
            assert str(error)  # a message to show
            return None


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("readers")


def _fresh(base: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=base))


# --- strategies ---------------------------------------------------------------------------------------------------

_LEAVES = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
           | st.just(_HUGE_MARK))
JSON_VALUES = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
_REPLACEMENTS = [HUGE, "-" + HUGE, "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-999", "-0", "0", "1.5",
                 "true", "null", '"text"', "[]", "{}", "[" * 3000 + "]" * 3000, "1" * 400]
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def dumps(value: Any) -> str:
    """JSON text of ``value``, with each huge-integer mark written as an integer of 5000 digits."""
    return json.dumps(value).replace(json.dumps(_HUGE_MARK), HUGE)


@st.composite
def mutated_dict(draw: st.DrawFn, valid: dict[str, Any], depth: int = 0) -> Any:
    """``valid`` with values of any type, keys removed or added (nested objects too); or something else entirely."""
    data = dict(valid)
    for _ in range(draw(st.integers(0, 3))):
        operation = draw(st.sampled_from(["retype", "remove", "descend", "add", "replace"]))
        key = draw(st.sampled_from(sorted(data))) if data else "key"
        if operation == "retype":
            data[key] = draw(JSON_VALUES)
        elif operation == "remove":
            data.pop(key, None)
        elif operation == "descend" and isinstance(data.get(key), dict) and depth < 3:
            data[key] = draw(mutated_dict(data[key], depth + 1))
        elif operation == "add":
            data[draw(st.text(max_size=8))] = draw(JSON_VALUES)
        elif operation == "replace":
            return draw(JSON_VALUES)
    return data


@st.composite
def mutated_text(draw: st.DrawFn, text: str, depths: tuple[int, ...] = (2, 50, 5000)) -> str:
    """``text`` truncated, with characters changed or inserted, a number replaced, or nested ``depths`` deep."""
    for _ in range(draw(st.integers(0, 3))):
        operation = draw(st.sampled_from(["truncate", "change", "insert", "number", "nest"]))
        at = draw(st.integers(0, len(text)))
        if operation == "truncate":
            text = text[:at]
        elif operation == "change" and text:
            at = min(at, len(text) - 1)
            text = text[:at] + draw(st.characters()) + text[at + 1:]
        elif operation == "insert":
            text = text[:at] + draw(st.text(max_size=8)) + text[at:]
        elif operation == "number":
            numbers = list(_NUMBER.finditer(text))
            if numbers:
                match = draw(st.sampled_from(numbers))
                text = text[:match.start()] + draw(st.sampled_from(_REPLACEMENTS)) + text[match.end():]
        else:
            depth = draw(st.sampled_from(depths))
            text = "[" * depth + text + "]" * depth
    return text


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes bytes that are not UTF-8


def json_document(valid: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Bytes of a file that should hold ``valid`` as JSON: mutated, random JSON, or random bytes."""
    mutated = mutated_dict(valid).map(dumps).flatmap(mutated_text).map(_encoded)
    return st.one_of(mutated, mutated, JSON_VALUES.map(lambda v: dumps(v).encode()), st.binary(max_size=300))


# Known hostile documents, always tried (random search finds them only now and then).
HOSTILE_JSON = [HUGE.encode(), b'{"a": ' + HUGE.encode() + b"}", b"[" * 5000 + b"]" * 5000, b'{"a": NaN}',
                b"Infinity", b"\xff\xfe\x00", b"", b"null"]


def hostile(test: Callable[..., None]) -> Callable[..., None]:
    """Add :data:`HOSTILE_JSON` (each whole, and as a JSONL line) as explicit examples of ``test``'s ``data``."""
    for document in HOSTILE_JSON:
        test = example(data=document + b"\n")(example(data=document)(test))
    return test


ROWS = st.builds(
    ManifestRow,
    path=st.text(min_size=1, max_size=20),
    status=st.sampled_from(["ok", "error"]),
    error=st.none() | st.text(max_size=10),
    ood_score=st.floats(-1e6, 1e6),
    is_ood=st.none() | st.booleans(),
    top_class=st.text(max_size=10),
    top_prob=st.floats(0, 1),
)


def _check_rows(rows: list[ManifestRow] | None) -> None:
    for row in rows or []:
        assert isinstance(row.path, str) and row.status in ("ok", "error")
        if row.ok:
            assert isinstance(row.ood_score, float) and math.isfinite(row.ood_score) and isinstance(row.top_class, str)
        assert row.top_prob is None or math.isfinite(row.top_prob)


# --- manifests ----------------------------------------------------------------------------------------------------

@st.composite
def jsonl_manifest(draw: st.DrawFn) -> bytes:
    lines = [draw(json_document(row.to_dict())) for row in draw(st.lists(ROWS, max_size=4))]
    return b"\n".join(lines) + draw(st.sampled_from([b"\n", b""]))


@hostile
@PROPERTY
@given(data=st.one_of(jsonl_manifest(), st.binary(max_size=500)))
def test_any_jsonl_manifest_reads_as_rows_or_a_named_error(base, data):
    path = _fresh(base) / "scan.jsonl"
    path.write_bytes(data)
    _check_rows(_outcome(lambda: read_manifest(path)))


def _csv_text(rows: list[ManifestRow]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows([{k: "" if v is None else v for k, v in row.to_dict().items()} for row in rows])
    return buffer.getvalue()


@hostile
@PROPERTY
@given(data=st.one_of(st.lists(ROWS, max_size=4).map(_csv_text).flatmap(mutated_text)
                      .map(_encoded),
                      st.binary(max_size=500)))
def test_any_csv_manifest_reads_as_rows_or_a_named_error(base, data):
    path = _fresh(base) / "scan.csv"
    path.write_bytes(data)
    _check_rows(_outcome(lambda: read_manifest(path)))


_ARROW_TYPES = ["string", "float64", "int64", "bool", "list", "null", "struct"]


def _arrow_column(kind: str, values: list[Any]) -> Any:
    import pyarrow as pa

    converted = {
        "string": lambda v: None if v is None else str(v),
        "float64": lambda v: v if isinstance(v, float) else None,
        "int64": lambda v: v if isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**63 else None,
        "bool": lambda v: v if isinstance(v, bool) else None,
        "list": lambda v: None if v is None else [1, 2],
        "null": lambda v: None,
        "struct": lambda v: None if v is None else {"a": 1},
    }[kind]
    return pa.array([converted(v) for v in values])


@st.composite
def parquet_manifest(draw: st.DrawFn, folder: Path) -> Path:
    """A Parquet manifest: valid rows with bytes damaged, or columns dropped and of any Arrow type."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from oodfilter.sinks.manifest import _write_parquet_atomically

    path = folder / "scan.parquet"
    rows = draw(st.lists(ROWS, max_size=4))
    if draw(st.booleans()):
        _write_parquet_atomically(path, rows)
        data = path.read_bytes()
        for _ in range(draw(st.integers(1, 3))):
            if not data:
                break
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] if draw(st.booleans()) else data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
        path.write_bytes(data)
        return path
    columns = {}
    for column in COLUMNS:
        if draw(st.integers(0, 9)) == 0:
            continue  # dropped
        values = [getattr(row, column) for row in rows] if rows else []
        kind = draw(st.sampled_from(_ARROW_TYPES))
        columns[draw(st.sampled_from([column, column, column.upper()]))] = _arrow_column(kind, values)
    pq.write_table(pa.table(columns) if columns else pa.table({"x": pa.array([], pa.int64())}), path)
    return path


@PROPERTY
@given(data=st.data())
def test_any_parquet_manifest_reads_as_rows_or_a_named_error(base, data):
    pytest.importorskip("pyarrow")
    folder = _fresh(base)
    if data.draw(st.integers(0, 4)) == 0:
        path = folder / "scan.parquet"
        path.write_bytes(data.draw(st.binary(max_size=500)))
    else:
        path = data.draw(parquet_manifest(folder))
    if data.draw(st.booleans()):  # a crash's journal beside it
        sidecar(path, "partial.jsonl").write_bytes(data.draw(jsonl_manifest()))
    _check_rows(_outcome(lambda: read_manifest(path)))


# --- meta, journal, calibration, feature header ----------------------------------------------------------------

VALID_META = {
    "method": "mcm", "threshold": 0.25, "fingerprints": {"image": "a" * 64, "yes": "b" * 64, "no": "c" * 64},
    "classes_sha256": "d" * 64, "cwd": "/data", "decision": "score > 0.25", "model": "test-tiny", "num_classes": 3,
    "templates": "clipn", "decision_rule": {"threshold": 0.25}, "calibration": None, "keep_fraction": None,
    "keep_boundary": None, "precision": "fp32",
}


@hostile
@PROPERTY
@given(data=json_document(VALID_META))
def test_any_meta_file_reads_as_a_checked_mapping_or_a_named_error(base, data):
    manifest = _fresh(base) / "scan.jsonl"
    sidecar(manifest, "meta.json").write_bytes(data)
    meta = _outcome(lambda: read_meta(manifest))
    if meta is not None:
        assert isinstance(meta, dict)
        for key in ("threshold", "keep_fraction", "keep_boundary"):
            assert meta.get(key) is None or math.isfinite(meta[key])


JOURNAL_KEY = b"\xab" * 32
JOURNAL_HEADER = JournalHeader("0123456789abcdef", (Path("/data/in"),)).signed(JOURNAL_KEY)


def _journal_line(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(["move", "copy", "link"]))
    src = "/data/in/" + draw(st.text("abc/", min_size=1, max_size=6))
    fingerprint = Fingerprint("symlink", src) if op == "link" else Fingerprint("file", "e" * 64)
    entry = JournalEntry(JOURNAL_HEADER, op, Path(src), Path("/data/out/x"), Path("/data/out"), "0123456789abcdef",
                         fingerprint)
    return json.loads(entry.signed(JOURNAL_KEY).to_json())


@st.composite
def journal(draw: st.DrawFn) -> bytes:
    """A journal as a run writes it (its signed header, then its entries), each line possibly mutated."""
    lines = [draw(json_document(json.loads(JOURNAL_HEADER.to_json())))]
    lines += [draw(json_document(_journal_line(draw))) for _ in range(draw(st.integers(0, 3)))]
    return b"\n".join(lines) + draw(st.sampled_from([b"\n", b""]))


@hostile
@PROPERTY
@given(data=st.one_of(journal(), st.binary(max_size=500)))
def test_any_journal_reads_as_checked_entries_or_a_named_error(base, data):
    path = _fresh(base) / "scan.jsonl.journal.jsonl"
    path.write_bytes(data)
    entries = _outcome(lambda: read_journal(path))
    for entry in entries or []:
        problem = entry_problem(entry)
        assert problem is None or isinstance(problem, str)


IDENTITY = {"fingerprints": {"image": "i", "yes": "y", "no": "n"}, "classes_sha256": "c", "templates": ["a {}"]}


@st.composite
def calibration_document(draw: st.DrawFn) -> bytes:
    scores = draw(st.lists(st.floats(-10, 10), min_size=20, max_size=40))
    recall = draw(st.sampled_from([0.5, 0.9, 0.95, 1.0]))
    valid = Calibration.fit(scores, recall, method="mcm", identity=IDENTITY).to_dict()
    return draw(json_document(valid))


@hostile
@PROPERTY
@given(data=calibration_document())
def test_any_calibration_file_loads_as_a_consistent_calibration_or_a_named_error(base, data):
    path = _fresh(base) / "cal.json"
    path.write_bytes(data)
    calibration = _outcome(lambda: Calibration.load(path))
    if calibration is not None:
        assert math.isfinite(calibration.threshold) and 0 < calibration.id_recall <= 1
        assert calibration.threshold == calibration.threshold_at(calibration.id_recall)


VALID_HEADER = FeatureHeader(512, "f" * 64, "test-tiny", "scan.jsonl.features.0123456789ab.f16", None, "fp32").to_dict()


@hostile
@PROPERTY
@given(data=json_document(VALID_HEADER))
def test_any_feature_header_reads_as_a_checked_header_or_a_named_error(base, data):
    manifest = _fresh(base) / "scan.jsonl"
    sidecar(manifest, "features.json").write_bytes(data)
    header = _outcome(lambda: read_header(manifest))
    if header is not None:
        assert 1 <= header.dim <= 1 << 16 and header.data.endswith(".f16")


@hostile
@PROPERTY
@given(data=json_document({"version": 1, "fingerprint": "f" * 64, "dim": 32}))
def test_any_text_cache_metadata_opens_the_cache_or_gives_a_named_error(base, data):
    from oodfilter.text.cache import TextCache

    folder = _fresh(base)
    (folder / "meta.json").write_bytes(data)
    cache = _outcome(lambda: TextCache(folder, "f" * 64, 32))
    assert cache is None or len(cache) == 0


# --- a bundle's oodfilter.json ----------------------------------------------------------------------------------

VALID_BUNDLE = {
    "format": "oodfilter-clipn-bundle", "format_version": 1,
    "architecture": {"model_cfg": {"embed_dim": 32, "vision_cfg": {"image_size": 32}}, "num_prompts": 4,
                     "embed_dim": 32},
    "source": {"name": "test-tiny", "pretrained": None, "kind": "open_clip", "details": {}},
    "no_branch_trained": False,
    "files": {"yes_model/open_clip_config.json": "0" * 64, "yes_model/open_clip_model.safetensors": "1" * 64,
              "no_tower.safetensors": "2" * 64, "yes_model/tokenizer.json": "3" * 64},
    "training_config": {"lr": 0.001, "steps": 10},
}


def test_the_bundle_manifest_the_properties_mutate_is_valid(base):
    from oodfilter.model.manifest import read_manifest as read_bundle_manifest

    folder = _fresh(base)
    (folder / "oodfilter.json").write_text(json.dumps(VALID_BUNDLE))
    assert read_bundle_manifest(folder).embed_dim == 32


@hostile
@PROPERTY
@given(data=json_document(VALID_BUNDLE))
def test_any_bundle_manifest_reads_as_a_checked_manifest_or_a_named_error(base, data):
    from oodfilter.model.bundle import check_bundle_destination
    from oodfilter.model.manifest import listed_files
    from oodfilter.model.manifest import read_manifest as read_bundle_manifest

    folder = _fresh(base)
    (folder / "oodfilter.json").write_bytes(data)
    manifest = _outcome(lambda: read_bundle_manifest(folder))
    if manifest is not None:
        assert manifest.num_prompts >= 1 and manifest.embed_dim >= 1
    with _bounded():
        assert isinstance(listed_files(folder), frozenset)  # read leniently: never raises
    _outcome(lambda: check_bundle_destination(folder, overwrite=True))


# --- YAML configs -------------------------------------------------------------------------------------------------

_YAML_SNIPPETS = ['"\\U99999999"', '"\\U00110000"', "2001-13-45", "!!binary aGVsbG8=", "2001-12-14",
                  "2001-12-14t21:59:43.10-05:00", "!!set {a, b}", "~", "0x1F", "0o17", "1_000", "{a: [1, {b: 2}]}",
                  "!!str 5", "!!int '7'", "yes", "off", "''", "|\n  text", "&anchor [1, 2]", "*anchor",
                  "!!python/object:os.system ls", "? [a]\n: 1", "!!omap [a: 1]"]
# Numbers at and past the edges, for the numeric options (most hostile first: hypothesis tries early ones more).
_YAML_NUMBERS = ["1" * 400, "-" + "1" * 400, HUGE, ".nan", ".inf", "-.inf", "1.0e400", "-1", "0", "0.5", "1", "2.5",
                 "true", "'12'"]


def _config_loaders() -> dict[str, tuple[type, Callable[[Path], Any]]]:
    from oodfilter.evaluate.config import EvalConfig, load_eval_config
    from oodfilter.evaluate.robustness_config import RobustnessConfig, load_robustness_config
    from oodfilter.scan import ScanConfig, load_scan_config
    from oodfilter.train.config import FinetuneConfig, load_finetune_config

    return {"scan": (ScanConfig, load_scan_config), "eval": (EvalConfig, load_eval_config),
            "finetune": (FinetuneConfig, load_finetune_config),
            "robustness": (RobustnessConfig, load_robustness_config)}


@st.composite
def yaml_config(draw: st.DrawFn, cls: type) -> bytes:
    """A YAML config for ``cls``: its keys (and now and then an unknown one) with values of any type, YAML's own
    forms and edge numbers, then mutated as text."""
    from oodfilter.config import field_types

    types = field_types(cls)
    lines = []
    for key in draw(st.lists(st.sampled_from([*sorted(types), "unknown"]), max_size=5, unique=True)):
        numeric = any(t in str(types.get(key)) for t in ("int", "float"))
        choice = draw(st.integers(0, 2))
        if choice == 0 and numeric:
            value = draw(st.sampled_from(_YAML_NUMBERS))
        elif choice == 1:
            value = draw(st.sampled_from(_YAML_SNIPPETS + _YAML_NUMBERS))
        else:
            value = yaml.safe_dump(draw(JSON_VALUES.filter(lambda v: _HUGE_MARK not in json.dumps(v))),
                                   default_flow_style=True, allow_unicode=True).removesuffix("\n...\n").strip()
        lines.append(f"{draw(st.sampled_from([key, key.replace('_', '-')]))}: {value}")
    # YAML nested past the stack takes seconds to refuse (an explicit example below does it once)
    return _encoded(draw(mutated_text("\n".join(lines) + "\n", depths=(2, 50))))


_KINDS = ["scan", "eval", "finetune", "robustness"]


@PROPERTY
@given(case=st.sampled_from(_KINDS).flatmap(
    lambda kind: st.tuples(st.just(kind), st.one_of(yaml_config(_config_loaders()[kind][0]),
                                                    yaml_config(_config_loaders()[kind][0]), st.binary(max_size=300)))))
@example(case=("scan", b"threshold: " + b"1" * 400 + b"\n"))  # found: an int beyond any float
@example(case=("eval", b"attack_eps: [" + b"1" * 400 + b"]\n"))
@example(case=("scan", b"batch_size: " + HUGE.encode() + b"\n"))  # found: an int Python will not convert
@example(case=("finetune", b"lr: " + b"[" * 700 + b"]" * 700 + b"\n"))  # found: nesting past the stack
@example(case=("scan", b'classes: "\\U99999999"\n'))  # found: a \U escape past C's int (OverflowError)
@example(case=("scan", b"cache_dir: 2001-13-45\n"))  # found: a date past the calendar (ValueError)
@example(case=("scan", b"max_pixels: 0\ninputs: [a]\nclasses: c.txt\n"))
@example(case=("finetune", b"data: d\nout: o\nsteps: 1\nlr: .nan\nlog_every: 0\n"))
def test_any_yaml_config_builds_a_config_or_a_named_error(base, case):
    kind, document = case
    load = _config_loaders()[kind][1]
    path = _fresh(base) / "config.yaml"
    path.write_bytes(document)
    config = _outcome(lambda: load(path))
    if config is not None and hasattr(config, "validate"):
        _outcome(config.validate)
