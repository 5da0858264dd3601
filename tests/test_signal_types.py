"""The standard tests of every registered signal type, generated over the registry.

A signal gets these by being registered (appliance.signals): its examples
parse and format back, malformed values are refused; a computable signal
hashes a known file as its reference does (REFERENCES below: a newly
registered computable signal must add its reference here, or fail); a value
matches itself and not an unrelated one through a snapshot built from a list
with its column (its name or any alias); its settings read from the file,
the environment and a ``[matching.<signal>]`` table, and out-of-range values
are refused. The GPU twin of the hashing test is tests/kernels/test_signal_types_gpu.py.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pdqhash
import pytest
from PIL import Image

from appliance import config as cfg
from appliance.errors import ConfigError, ItemCode, ItemFault
from appliance.index.snapshot import Snapshot
from appliance.lists import parse_csv
from appliance.pipeline import Pipeline
from appliance.results import Item
from appliance.signals import SIGNALS, Option, SignalType, _checked, resolve
from appliance.signals.base import DISTANCE_KINDS
from appliance.video import vpdq_format
from appliance.video.tmk import TmkFeatures
from tests.imaging import encode, synthetic_image

ALL = list(SIGNALS.values())
COMPUTABLE = [s for s in ALL if s.computable]
OPTIONS = [(s, o) for s in ALL for o in s.options]
INLINE = cfg.Config(limits=cfg.LimitsConfig(decode_isolation="inline"))
# The known input: a small picture, hashed whole by every computable signal.
KNOWN = encode(synthetic_image(5, (64, 48)), "PNG")

Reference = Callable[[bytes], tuple[bytes, int | None]]


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _digest(name: str) -> Reference:
    return lambda data: (hashlib.new(name, data).digest(), None)


def _imagehash(function: Callable[[Image.Image], object]) -> Reference:
    return lambda data: (bytes.fromhex(str(function(_image(data)))), None)


def _pdq(data: bytes) -> tuple[bytes, int | None]:
    bits, quality = pdqhash.compute(np.asarray(_image(data).convert("RGB")))
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes(), int(quality)


# Each computable signal's reference implementation: file bytes -> (value, quality).
REFERENCES: dict[str, Reference] = {
    "md5": _digest("md5"),
    "sha1": _digest("sha1"),
    "sha256": _digest("sha256"),
    "pdq": _pdq,
    "phash": _imagehash(imagehash.phash),
    "dhash": _imagehash(imagehash.dhash),
    "ahash": _imagehash(imagehash.average_hash),
    "whash": _imagehash(imagehash.whash),
}


def ids(s: SignalType) -> str:
    return s.name


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as p:
        yield p


@pytest.mark.parametrize("signal", ALL, ids=ids)
def test_examples_parse_and_format_back(signal: SignalType) -> None:
    assert signal.examples, f"{signal.name} has no examples"
    for example in signal.examples:
        value = signal.parse(example)
        assert signal.fits(len(value)) and signal.format(value) == example
        hexed = example == value.hex()  # hex is read in any case; base64 and JSON are not hex
        assert signal.parse(f" {example.upper() if hexed else example} ") == value
        for bad in (example[:-1], example + "0", "g" * signal.hex_len, ""):
            with pytest.raises(ItemFault) as info:
                signal.parse(bad)
            assert info.value.code == ItemCode.MALFORMED_HASH


@pytest.mark.parametrize("signal", ALL, ids=ids)
def test_its_hashers_are_found(signal: SignalType) -> None:
    if signal.computable:
        assert callable(resolve(signal.cpu_hasher))
    else:
        assert not signal.cpu_hasher and signal.device_hasher is None
    if signal.device_hasher:  # resolved under the simulator, in tests/kernels
        module, _, attribute = signal.device_hasher.partition(":")
        assert module and attribute


def _video_reference(name: str) -> Callable[[bytes], None]:
    """A check of our value of the golden clip against the reference tool's output."""
    def tmk(value: bytes) -> None:
        ours = TmkFeatures.from_bytes(value)
        theirs = TmkFeatures.from_bytes((VIDEO_DATA / f"{CLIP}.tmk").read_bytes())
        assert ours.frames == theirs.frames
        assert min(ours.level1(theirs), ours.level2(theirs)) >= 0.999

    def vpdq(value: bytes) -> None:
        lines = (VIDEO_DATA / f"{CLIP}.vpdq-1s.txt").read_text().split()
        theirs = [line.split(",") for line in lines]
        ours = vpdq_format.unpack(value)
        assert [f.frame for f in ours] == [int(t[0]) for t in theirs]
        assert [f"{f.seconds:.3f}" for f in ours] == [t[3] for t in theirs]
        assert [f.quality for f in ours] == [int(t[1]) for t in theirs]
        assert max(bin(int.from_bytes(f.pdq, "big") ^ int(t[2], 16)).count("1")
                   for f, t in zip(ours, theirs, strict=True)) <= 6
    return {"two_level": tmk, "frames": vpdq}[SIGNALS[name].match]


VIDEO_DATA = Path(__file__).parent / "data" / "video"
CLIP = "test-padded-dimensions"
# The video signals' reference: the golden clip and what the reference tools made of it.
VIDEO_REFERENCES: dict[str, Callable[[bytes], None]] = {
    s.name: _video_reference(s.name) for s in COMPUTABLE if s.media == "video"}


def cpu_hashes(signal: SignalType, data: bytes, pool: ThreadPoolExecutor
               ) -> tuple[bytes, int | None]:
    """The CPU pipeline's value (and quality) of ``signal`` for ``data``."""
    [result] = Pipeline(INLINE).run([Item("known", data, (signal.name,), match=False)],
                                    None, pool)
    assert result.error is None and not result.skipped, (result.error, result.skipped)
    [made] = [h for h in result.hashes if h.signal == signal.name and not h.variant]
    return made.value, made.quality if signal.quality else None


@pytest.mark.parametrize("signal", COMPUTABLE, ids=ids)
def test_it_hashes_a_known_input_as_its_reference(signal: SignalType,
                                                  pool: ThreadPoolExecutor) -> None:
    if signal.media == "video":
        value, _ = cpu_hashes(signal, (VIDEO_DATA / f"{CLIP}.mp4").read_bytes(), pool)
        VIDEO_REFERENCES[signal.name](value)
        return
    reference = REFERENCES.get(signal.name)
    assert reference is not None, (
        f"signal {signal.name!r} has no reference: add one to REFERENCES in {Path(__file__).name}")
    want_value, want_quality = reference(KNOWN)
    value, quality = cpu_hashes(signal, KNOWN, pool)
    assert value.hex() == want_value.hex()
    assert quality == (want_quality if signal.quality else None)


def _snapshot(signal: SignalType, column: str) -> Snapshot:
    text = io.StringIO()  # the csv module quotes what needs it (vPDQ's JSON)
    csv.writer(text).writerows([["id", "category", column], ["e1", "c", signal.examples[0]]])
    listing = text.getvalue().encode()
    return Snapshot([parse_csv(listing, "L")], cfg.MatchingConfig())


@pytest.mark.parametrize(("signal", "column"),
                         [(s, c) for s in ALL for c in (s.name, *s.aliases)],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_its_list_column_loads_and_a_value_matches_itself_only(signal: SignalType,
                                                               column: str) -> None:
    snapshot = _snapshot(signal, column.upper())
    assert snapshot.entry_counts() == {("L", signal.name): 1}
    value = signal.parse(signal.examples[0])
    # A second example is unrelated to the first; else every bit flipped.
    unrelated = (signal.parse(signal.examples[1]) if len(signal.examples) > 1
                 else bytes(b ^ 0xFF for b in value))
    quality = [100] if signal.quality else None
    [hits] = snapshot.match(signal.name, [value], quality)
    # A video hit does not repeat its (large) query; its scores say how it matched.
    query = "" if signal.media == "video" else signal.examples[0]
    assert [(h.entry_id, h.distance, h.signal, h.query) for h in hits] == [
        ("e1", 0, signal.name, query)]
    scores = [score for _, score in hits[0].scores[:2]]
    assert (scores and min(scores) >= 0.999) if signal.media == "video" else not scores
    assert snapshot.match(signal.name, [unrelated], quality) == [[]]


@pytest.mark.parametrize("signal", [s for s in ALL if s.quality], ids=ids)
def test_a_value_below_its_quality_gate_does_not_match(signal: SignalType) -> None:
    snapshot = _snapshot(signal, signal.name)
    minimum = signal.quality_min(snapshot.matching)
    assert minimum is not None and minimum > 0
    value = signal.parse(signal.examples[0])
    assert snapshot.match(signal.name, [value], [minimum - 1]) == [[]]
    assert len(snapshot.match(signal.name, [value], [minimum])[0]) == 1


@pytest.mark.parametrize("signal", ALL, ids=ids)
def test_its_threshold_is_its_match_radius(signal: SignalType) -> None:
    matching = cfg.MatchingConfig()
    if signal.match not in DISTANCE_KINDS:  # exact, or decided by the index (video)
        assert signal.threshold(matching) == 0
    else:
        option = signal.option("threshold")
        assert option is not None and signal.threshold(matching) == option.default


def _other(option: Option) -> object:
    if isinstance(option.default, bool):
        return not option.default
    if option.choices:
        return next(c for c in option.choices if c != option.default)
    if isinstance(option.default, float):
        return option.default + 0.25 if option.high is None or option.default < option.high \
            else option.default - 0.25
    assert isinstance(option.default, int)
    return option.default + 1 if option.high is None or option.default < option.high else 0


def _key(signal: SignalType, option: Option) -> str:
    return f"{option.section}.{signal.field(option.key)}"


@pytest.mark.parametrize(("signal", "option"), OPTIONS,
                         ids=[_key(s, o) for s, o in OPTIONS])
def test_its_settings_read_from_every_source(signal: SignalType, option: Option,
                                             tmp_path: Path) -> None:
    section, name = option.section, signal.field(option.key)
    assert getattr(getattr(cfg.Config(), section), name) == option.default
    value = _other(option)
    shown = str(value).lower() if isinstance(value, bool) else value
    env = {f"APPLIANCE_{section.upper()}_{name.upper()}": str(shown)}
    assert getattr(getattr(cfg.load(env=env), section), name) == value
    toml = f'"{shown}"' if isinstance(shown, str) and not isinstance(value, bool) else shown
    flat, table = tmp_path / "flat.toml", tmp_path / "table.toml"
    flat.write_text(f"[{section}]\n{name} = {toml}\n")
    table.write_text(f"[{section}.{signal.name}]\n{option.key} = {toml}\n")
    for path in (flat, table):
        assert getattr(getattr(cfg.load(str(path)), section), name) == value


@pytest.mark.parametrize(("signal", "option"),
                         [(s, o) for s, o in OPTIONS if o.low is not None or o.choices],
                         ids=lambda x: x.name if isinstance(x, SignalType) else x.key)
def test_its_settings_out_of_range_are_refused(signal: SignalType, option: Option) -> None:
    name = signal.field(option.key)
    bad: object = "bogus" if option.choices else (option.low or 0) - 1
    with pytest.raises(ConfigError, match=f"{option.section}.{name}"):
        cfg.load(env={f"APPLIANCE_{option.section.upper()}_{name.upper()}": str(bad)})
    if option.high is not None:
        with pytest.raises(ConfigError, match=f"{option.section}.{name}"):
            cfg.load(env={f"APPLIANCE_{option.section.upper()}_{name.upper()}":
                          str(option.high + 1)})



@pytest.mark.parametrize("change", [{"options": ()}, {"quality": True}, {"cpu_hasher": ""}],
                         ids=["no-threshold", "no-quality-gate", "no-cpu-hasher"])
def test_a_signal_type_lacking_what_it_needs_is_refused_at_import(change: dict[str, Any]
                                                                  ) -> None:
    with pytest.raises(TypeError):
        _checked(replace(SIGNALS["phash"], **change))
    with pytest.raises(TypeError, match="same name"):
        _checked(*ALL, SIGNALS["phash"])
