"""deploy/k8s: the Kubernetes manifests are valid objects and agree with the code.

Every complete object (each document of each ``.yaml`` but the kustomization
files and the ``*.patch.yaml`` patches) is validated offline against the
Kubernetes schemas bundled with kubernetes-validate (strict: unknown fields
are errors); the ServiceMonitor, a CRD without a bundled schema, is checked
here field by field. The CPU and GPU overlays are rendered by a small
kustomize (``render``: resources, namespace, configMapGenerator, images and
strategic-merge patches, as kustomize merges them) and their objects are
validated too; where ``kubectl`` is installed its own ``kubectl kustomize``
must give the same objects.

Then the rendered manifests are read against the code: the effective
configuration is what ``appliance serve`` would load in the pod (the image's
entry point from the Dockerfile, plus the container's args, parsed by
``appliance.cli.build_parser``; the ConfigMap's TOML; the container's
environment), and the ports, probes, mounts, user, backend, grace period,
metric names and selectors are compared with it. ``test_each_check_can_fail``
breaks one thing at a time and expects the check that guards it to fail.
"""

from __future__ import annotations

import copy
import importlib
import json
import math
import os
import posixpath
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance import config as cfg
from appliance.cli import build_parser
from appliance.cli_parser import setting_overrides
from appliance.errors import ApplianceError
from appliance.handle import SERVICE_NAME
from appliance.metrics import Metrics
from tests.test_deploy import exported_names

# Neither ships type information; as modules they are Any here.
yaml: Any = importlib.import_module("yaml")
kubernetes_validate: Any = importlib.import_module("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
VARIANTS = ("cpu", "gpu")
ADAPTER = K8S / "monitoring" / "prometheus-adapter.yaml"
README = ROOT / "deploy" / "README.md"

# The schemas: the oldest Kubernetes the manifests are for (1.33, also the
# floor of the test extra's kubernetes-validate>=1.33, so always bundled),
# and the newest the installed kubernetes-validate bundles.
OLDEST_KUBERNETES = "1.33"
SCHEMA_VERSIONS = tuple(dict.fromkeys((OLDEST_KUBERNETES, kubernetes_validate.latest_version())))
# Kinds of CRDs, checked by ``check_service_monitor`` instead of a schema.
CRD_GROUPS = ("monitoring.coreos.com/",)
# After preStop and server.grace_seconds, the exit: the gRPC server's flush
# (0.5 s), joining the worker threads (at least 1 s), the process's end.
EXIT_MARGIN_SECONDS = 5
# Startup may take this long (mapping a large snapshot, compiling kernels).
MIN_STARTUP_SECONDS = 300
# Stand-ins for what the kubelet fills in.
POD_NAME = "appliance-5d8f7c9b4-x2x7q"
NAMESPACE = "appliance"
# Kustomize's merge keys of the lists the patches touch; other lists are replaced.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name",
              "volumes": "name", "volumeMounts": "mountPath", "ports": "containerPort"}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator",
                      "images", "patches"}

Obj = dict[str, Any]


# -- reading and rendering ---------------------------------------------------


def load_documents(path: Path) -> list[Obj]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert docs, f"{path}: no document"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
    return docs


def is_object_file(path: Path) -> bool:
    return path.name != "kustomization.yaml" and not path.name.endswith(".patch.yaml")


def object_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if is_object_file(p))


def is_crd(obj: Obj) -> bool:
    return str(obj.get("apiVersion", "")).startswith(CRD_GROUPS)


def kustomization(folder: Path) -> Obj:
    data = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    unknown = set(data) - KUSTOMIZATION_KEYS
    # The renderer below knows these fields and no others: a new one needs it taught.
    assert not unknown, f"{folder}/kustomization.yaml: fields render() does not apply: {unknown}"
    assert data["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert data["kind"] == "Kustomization"
    return data


def strategic_merge(base: Any, patch: Any, key: str = "") -> Any:
    """``patch`` merged into ``base`` as kustomize merges a strategic-merge patch:
    mappings key by key, lists with a merge key (``MERGE_KEYS``) item by item
    (new items first, as kustomize places them), other lists and scalars replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    merge_key = MERGE_KEYS.get(key)
    if merge_key and isinstance(base, list) and isinstance(patch, list):
        patched = {item[merge_key]: item for item in patch}
        present = {item[merge_key] for item in base}
        new = [copy.deepcopy(item) for item in patch if item[merge_key] not in present]
        return new + [strategic_merge(item, patched[item[merge_key]])
                      if item[merge_key] in patched else item for item in base]
    return copy.deepcopy(patch)


def _generated_config_maps(folder: Path, spec: Obj) -> list[Obj]:
    out = []
    for generator in spec.get("configMapGenerator", []):
        assert set(generator) <= {"name", "files"}, generator
        data = {}
        for entry in generator["files"]:
            key, _, file = entry.rpartition("=")
            data[key or Path(file).name] = (folder / file).read_text(encoding="utf-8")
        out.append({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": generator["name"]}, "data": data})
    return out


def _set_images(obj: Obj, images: list[Obj]) -> None:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        name = container["image"].split(":")[0]
        for image in images:
            if image["name"] == name:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"


def render(folder: Path) -> list[Obj]:
    """The objects ``kubectl kustomize folder`` gives, but for the generated
    ConfigMaps' hash suffixes (their names stay as written)."""
    spec = kustomization(folder)
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        path = (folder / entry).resolve()
        objects += render(path) if path.is_dir() else copy.deepcopy(load_documents(path))
    objects += _generated_config_maps(folder, spec)
    for patch_entry in spec.get("patches", []):
        assert set(patch_entry) == {"path"}, patch_entry
        assert patch_entry["path"].endswith(".patch.yaml"), patch_entry
        for patch in load_documents(folder / patch_entry["path"]):
            targets = [o for o in objects if o["kind"] == patch["kind"]
                       and o["metadata"]["name"] == patch["metadata"]["name"]]
            assert len(targets) == 1, f"{patch_entry['path']}: no one object to patch"
            objects[objects.index(targets[0])] = strategic_merge(targets[0], patch)
    for obj in objects:
        _set_images(obj, spec.get("images", []))
        if "namespace" in spec:
            obj["metadata"]["namespace"] = spec["namespace"]
    return objects


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {variant: render(K8S / variant) for variant in VARIANTS}


def find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [o for o in objects
            if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(objects: list[Obj]) -> Obj:
    spec: Obj = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(objects: list[Obj]) -> Obj:
    containers = pod_spec(objects)["containers"]
    assert len(containers) == 1, "one container: the appliance"
    c: Obj = containers[0]
    return c


# -- the effective configuration of the pod ----------------------------------


def dockerfile_stages() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = {}
    for stage in re.split(r"^FROM ", text, flags=re.M)[1:]:
        name = re.match(r"\S+ AS (\w+)", stage)
        assert name is not None, stage.splitlines()[0]
        stages[name.group(1)] = stage
    return stages


def entrypoint(target: str) -> list[str]:
    found = re.findall(r"^ENTRYPOINT (\[.*\])$", dockerfile_stages()[target], flags=re.M)
    assert len(found) == 1, target
    words = json.loads(found[0])
    assert isinstance(words, list)
    return [str(w) for w in words]


def dockerfile_user(target: str) -> int:
    users = re.findall(r"^USER (\S+)$", dockerfile_stages()[target], flags=re.M)
    assert len(users) == 1, target
    return int(users[0])


def image_target(image: str) -> str:
    """The Dockerfile target an image was built from: tags of the cpu target end
    in ``-cpu`` (docker build --target cpu), the default (gpu) target's do not."""
    tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
    assert tag, f"{image}: no tag"
    return "cpu" if tag.endswith("-cpu") else "gpu"


def _cpu_quantity(value: str) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _service_links(objects: list[Obj]) -> dict[str, str]:
    """The variables the kubelet adds for each Service unless enableServiceLinks is false."""
    out = {}
    for service in find(objects, "Service"):
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        port = service["spec"]["ports"][0]["port"]
        out.update({f"{prefix}_SERVICE_HOST": "10.0.0.1", f"{prefix}_SERVICE_PORT": str(port),
                    f"{prefix}_PORT": f"tcp://10.0.0.1:{port}"})
    return out


def pod_environment(objects: list[Obj]) -> dict[str, str]:
    """The container's environment as the kubelet sets it: service links (unless
    turned off), then ``env`` in order, ``$(VAR)`` expanded, fields and resources
    filled in."""
    c, spec = container(objects), pod_spec(objects)
    # The API server's address is set in every pod, service links or not.
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    if spec.get("enableServiceLinks") is not False:
        env.update(_service_links(objects))
    for var in c.get("env", []):
        if "value" in var:
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)),
                           var["value"])
        elif "fieldRef" in var["valueFrom"]:
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            value = {"metadata.name": POD_NAME, "metadata.namespace": NAMESPACE}[path]
        else:
            ref = var["valueFrom"]["resourceFieldRef"]
            assert ref.get("containerName", c["name"]) == c["name"]
            kind, _, resource = ref["resource"].partition(".")
            assert resource == "cpu", f"{var['name']}: only cpu is filled in here"
            amount = _cpu_quantity(c["resources"][kind][resource])
            value = str(math.ceil(amount / _cpu_quantity(ref.get("divisor", "1"))))
        env[var["name"]] = value
    return env


def mounts(objects: list[Obj]) -> dict[str, tuple[Obj, Obj]]:
    """mountPath -> (the volumeMount, its volume)."""
    volumes = {v["name"]: v for v in pod_spec(objects).get("volumes", [])}
    out = {}
    for mount in container(objects).get("volumeMounts", []):
        assert mount["name"] in volumes, f"mount of no volume: {mount['name']}"
        out[mount["mountPath"]] = (mount, volumes[mount["name"]])
    return out


def mount_of(objects: list[Obj], path: str) -> tuple[Obj, Obj]:
    """The mount that holds ``path`` (the longest mountPath above it)."""
    above = [m for m in mounts(objects) if path == m or path.startswith(m.rstrip("/") + "/")]
    assert above, f"{path}: on no volume (the root filesystem is read-only)"
    return mounts(objects)[max(above, key=len)]


def config_file(objects: list[Obj], path: str) -> Path:
    """The repository file a path in the pod reads: a key of a ConfigMap that a
    configMapGenerator of deploy/k8s made from a file."""
    mount, volume = mount_of(objects, path)
    assert mount["mountPath"] == posixpath.dirname(path), f"{path}: not at its mount's top"
    assert "configMap" in volume, f"{path}: not on a ConfigMap volume"
    items = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])}
    key = items.get(posixpath.basename(path), posixpath.basename(path))
    data = one(objects, "ConfigMap", volume["configMap"]["name"])["data"]
    assert key in data, f"{path}: the ConfigMap has no key {key}"
    sources = [BASE / e.rpartition("=")[2]
               for g in kustomization(BASE).get("configMapGenerator", [])
               if g["name"] == volume["configMap"]["name"] for e in g["files"]
               if (e.rpartition("=")[0] or Path(e).name) == key]
    assert len(sources) == 1, f"{path}: no generator file for it"
    source: Path = sources[0]
    return source


def serve_argv(objects: list[Obj]) -> list[str]:
    c = container(objects)
    assert "command" not in c, "the image's entry point runs (`appliance serve ...`)"
    return entrypoint(image_target(c["image"])) + [str(a) for a in c.get("args", [])]


def effective(objects: list[Obj]) -> tuple[cfg.Config, Any]:
    """The configuration ``appliance serve`` loads in the pod, and its parsed
    arguments: the command line as cmd_serve reads it (appliance.cli._config)."""
    argv = serve_argv(objects)
    assert argv[0] == "appliance", argv
    args, unknown = build_parser().parse_known_args(argv[1:])
    assert not unknown, f"appliance serve refuses {unknown}"
    assert args.command == "serve", argv
    path = getattr(args, "config", None)
    assert path, "no --config: the ConfigMap's file is not read"
    try:
        config = cfg.load(path=str(config_file(objects, path)), env=pod_environment(objects),
                          overrides=setting_overrides(args), lists=args.lists)
    except ApplianceError as exc:
        raise AssertionError(f"appliance serve would not start: {exc}") from exc
    return config, args


def port_numbers(objects: list[Obj]) -> dict[str, int]:
    """The container's port names -> numbers."""
    return {p["name"]: p["containerPort"] for p in container(objects)["ports"]}


def _resolve(objects: list[Obj], port: int | str) -> int:
    return port_numbers(objects)[port] if isinstance(port, str) else port


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_labels(objects: list[Obj]) -> dict[str, str]:
    labels: dict[str, str] = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


# -- the checks (each raises AssertionError) -----------------------------------


def check_command(objects: list[Obj], variant: str) -> None:
    config, _ = effective(objects)
    target = image_target(container(objects)["image"])
    assert target == variant, f"{variant}: image of the {target} target"
    assert config.server.host == "0.0.0.0", "the kubelet and the Services reach the pod's IP"
    assert config.server.backend == variant, f"{variant}: backend {config.server.backend}"


def check_ports(objects: list[Obj], variant: str) -> None:
    config, _ = effective(objects)
    s = config.server
    assert s.health_port not in (0, s.port, s.metrics_port), "server.health_port must be on"
    wanted = {"grpc": s.port, "health": s.health_port, "metrics": s.metrics_port}
    assert port_numbers(objects) == wanted
    grpc_service = one(objects, "Service", "appliance-grpc")
    assert grpc_service["spec"].get("clusterIP") == "None", "headless: clients balance themselves"
    assert not grpc_service["spec"].get("publishNotReadyAddresses"), "ready pods only"
    metrics_service = one(objects, "Service", "appliance-metrics")
    assert metrics_service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert metrics_service["spec"].get("clusterIP") != "None"
    for service, port in ((grpc_service, s.port), (metrics_service, s.metrics_port)):
        ports = service["spec"]["ports"]
        assert [_resolve(objects, p["targetPort"]) for p in ports] == [port], \
            service["metadata"]["name"]
        assert matches(service["spec"]["selector"], pod_labels(objects))
    policy = one(objects, "NetworkPolicy")
    assert matches(policy["spec"]["podSelector"]["matchLabels"], pod_labels(objects))
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    opened = {_resolve(objects, p["port"]) for rule in policy["spec"]["ingress"]
              for p in rule["ports"]}
    assert opened == set(wanted.values()), f"NetworkPolicy opens {opened}"


def check_probes(objects: list[Obj], variant: str) -> None:
    config, _ = effective(objects)
    # Why the probes cannot ask the main port: it requires TLS (and client
    # certificates), which Kubernetes' grpc probes do not speak.
    assert config.security.tls_cert and config.security.tls_client_ca
    c = container(objects)
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(name)
        assert probe is not None, f"no {name}"
        handlers = set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"}
        assert handlers == {"grpc"}, f"{name}: {handlers}"
        assert probe["grpc"]["port"] == config.server.health_port, f"{name}: not the health port"
        assert probe["grpc"].get("service", "") in ("", SERVICE_NAME), name
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= MIN_STARTUP_SECONDS, \
        "the startup probe must cover loading the lists"


def check_grace(objects: list[Obj], variant: str) -> None:
    config, _ = effective(objects)
    hook = container(objects).get("lifecycle", {}).get("preStop", {})
    if "sleep" in hook:
        pre_stop = float(hook["sleep"]["seconds"])
    else:
        command = hook.get("exec", {}).get("command", [])
        assert command[:1] == ["sleep"], "preStop: a sleep, so the endpoints drop the pod first"
        pre_stop = float(command[1])
    assert pre_stop > 0, "preStop: a sleep, so the endpoints drop the pod first"
    period = pod_spec(objects)["terminationGracePeriodSeconds"]
    needed = pre_stop + config.server.grace_seconds + EXIT_MARGIN_SECONDS
    assert period >= needed, (f"terminationGracePeriodSeconds {period} < preStop {pre_stop} + "
                              f"grace_seconds {config.server.grace_seconds} + "
                              f"{EXIT_MARGIN_SECONDS}")


def check_mounts(objects: list[Obj], variant: str) -> None:
    config, args = effective(objects)
    sec = config.security
    secrets = {"tls_cert": sec.tls_cert, "tls_key": sec.tls_key,
               "tls_client_ca": sec.tls_client_ca, "identities_file": sec.identities_file}
    for key, path in secrets.items():
        assert path, f"security.{key} is not set"
        mount, volume = mount_of(objects, path)
        assert mount["mountPath"] == posixpath.dirname(path), f"{key}: {path}"
        assert mount.get("readOnly") is True, f"{key}: writable"
        assert "secret" in volume, f"{key}: not from a Secret"
        items = [i["path"] for i in volume["secret"].get("items", [])]
        assert posixpath.basename(path) in items, f"{key}: the Secret's items lack {path}"
    for volume in pod_spec(objects)["volumes"]:
        for source in ("secret", "configMap"):
            if source in volume:
                mode = volume[source].get("defaultMode", 0o644)
                assert mode & 0o227 == 0, f"{volume['name']}: mode {oct(mode)}"
    config_mount, _ = mount_of(objects, args.config)
    assert config_mount.get("readOnly") is True
    assert config.lists, "no lists configured"
    for spec in config.lists:
        mount, volume = mount_of(objects, spec.path)
        assert mount.get("readOnly") is True, f"list {spec.name}: writable"
        claim = volume.get("persistentVolumeClaim")
        assert claim is not None and claim.get("readOnly") is True, \
            f"list {spec.name}: not on a read-only claim"
        assert find(objects, "PersistentVolumeClaim", claim["claimName"])
    assert config.server.audit_log, "server.audit_log is not set"
    mount, volume = mount_of(objects, config.server.audit_log)
    assert mount["mountPath"] == posixpath.dirname(config.server.audit_log)
    assert "persistentVolumeClaim" in volume, "audit logs must outlive the pod"
    assert find(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])


def check_writable(objects: list[Obj], variant: str) -> None:
    config, _ = effective(objects)
    env = pod_environment(objects)
    assert "NUMBA_CACHE_DIR" in env
    caches = {k: v for k, v in env.items() if k.endswith(("CACHE_DIR", "CACHE_PATH"))}
    scratch = set()
    for key, path in caches.items():
        mount, volume = mount_of(objects, path)
        assert "emptyDir" in volume, f"{key}: not on the scratch emptyDir"
        scratch.add(mount["mountPath"])
    audit_dir = posixpath.dirname(config.server.audit_log)
    writable = {m for m, (mount, _) in mounts(objects).items() if not mount.get("readOnly")}
    assert writable <= {audit_dir, *scratch}, f"writable: {writable - {audit_dir, *scratch}}"
    for volume in pod_spec(objects)["volumes"]:
        assert "hostPath" not in volume, volume["name"]


def check_security(objects: list[Obj], variant: str) -> None:
    spec, c = pod_spec(objects), container(objects)
    pod_sc, sc = spec.get("securityContext", {}), c.get("securityContext", {})
    user = dockerfile_user(image_target(c["image"]))
    assert sc.get("runAsUser", pod_sc.get("runAsUser")) == user, "the Dockerfile's USER"
    assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True
    assert sc.get("readOnlyRootFilesystem") is True
    assert sc.get("allowPrivilegeEscalation") is False
    assert not sc.get("privileged")
    assert sc.get("capabilities", {}).get("drop") == ["ALL"]
    assert not sc.get("capabilities", {}).get("add")
    seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
    assert seccomp.get("type") == "RuntimeDefault"
    assert spec.get("automountServiceAccountToken") is False
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")


def check_variant(objects: list[Obj], variant: str) -> None:
    resources = container(objects)["resources"]
    gpus = {kind: resources.get(kind, {}).get("nvidia.com/gpu") for kind in ("requests", "limits")}
    if variant == "gpu":
        assert gpus["limits"] == "1", "the GPU variant asks one GPU"
        assert gpus["requests"] in (None, "1")
    else:
        assert gpus == {"requests": None, "limits": None}, "the CPU variant asks no GPU"
    for kind in ("cpu", "memory"):
        assert kind in resources["requests"] and kind in resources["limits"], kind
    config, _ = effective(objects)
    cpus = _cpu_quantity(resources["limits"]["cpu"])
    assert 0 < config.server.workers <= math.ceil(cpus), \
        f"server.workers {config.server.workers}: one per CPU of the limit"


def check_rollout(objects: list[Obj], variant: str) -> None:
    deployment = one(objects, "Deployment")
    spec = deployment["spec"]
    assert matches(spec["selector"]["matchLabels"], pod_labels(objects))
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    hpa = one(objects, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == \
        ("apps/v1", "Deployment", deployment["metadata"]["name"])
    assert "replicas" not in spec, "the HPA owns the replica count"
    pdb = one(objects, "PodDisruptionBudget")
    assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels(objects))
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]
    for constraint in pod_spec(objects).get("topologySpreadConstraints", []):
        assert matches(constraint["labelSelector"]["matchLabels"], pod_labels(objects))


def adapter_rules() -> list[Obj]:
    config_map = one(load_documents(ADAPTER), "ConfigMap")
    rules = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    assert isinstance(rules, list) and rules
    return rules


def _rule_series(rule: Obj) -> str:
    found = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", rule["seriesQuery"])
    assert found, rule["seriesQuery"]
    return found.group(0)


def _rule_exposed(rule: Obj) -> str:
    series = _rule_series(rule)
    name = rule.get("name", {})
    assert re.search(name.get("matches", ".*"), series), rule
    return str(name.get("as") or series)


def check_hpa(objects: list[Obj], variant: str, rules: list[Obj] | None = None) -> None:
    rules = adapter_rules() if rules is None else rules
    known = exported_names(Metrics().registry)
    for rule in rules:
        assert _rule_series(rule) in known, f"adapter: no metric {_rule_series(rule)}"
        assert {"namespace", "pod"} <= set(rule["resources"]["overrides"]), rule
        for part in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert part in rule["metricsQuery"], f"metricsQuery lacks {part}"
    served = {_rule_exposed(rule) for rule in rules}
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["metrics"], "no metric"
    for metric in hpa["spec"]["metrics"]:
        assert metric["type"] == "Pods", metric
        name = metric["pods"]["metric"]["name"]
        assert name in served, f"HPA metric {name}: no adapter rule serves it"
        assert name in known, f"HPA metric {name}: not exported by appliance.metrics"


def alerts_job() -> str:
    text = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text(encoding="utf-8")
    found = re.search(r'up\{job="([^"]+)"\}', text)
    assert found, "ApplianceDown's job"
    return found.group(1)


def check_service_monitor(objects: list[Obj], variant: str) -> None:
    """The ServiceMonitor (a CRD: no bundled schema) field by field."""
    config, _ = effective(objects)
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) <= {"apiVersion", "kind", "metadata", "spec"}
    assert isinstance(monitor["metadata"].get("name"), str)
    spec = monitor["spec"]
    assert set(spec) <= {"jobLabel", "selector", "endpoints", "namespaceSelector",
                         "targetLabels", "podTargetLabels", "sampleLimit"}, set(spec)
    selected = [s for s in find(objects, "Service")
                if matches(spec["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
    assert [s["metadata"]["name"] for s in selected] == ["appliance-metrics"], \
        "the ServiceMonitor must select the metrics Service alone"
    service = selected[0]
    assert service["metadata"]["labels"].get(spec["jobLabel"]) == alerts_job(), \
        "the job label must be the alerts' job"
    names = {p["name"] for p in service["spec"]["ports"]}
    assert spec["endpoints"], "no endpoint"
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout",
                                 "tlsConfig", "relabelings", "metricRelabelings"}, endpoint
        assert endpoint["port"] in names, f"endpoint port {endpoint['port']}: not the Service's"
        assert endpoint.get("path", "/metrics") == "/metrics"
        scheme = "https" if config.security.metrics_tls else "http"
        assert endpoint.get("scheme", "http") == scheme
        assert re.fullmatch(r"\d+[smh]", endpoint.get("interval", "30s"))


CHECKS: dict[str, Callable[[list[Obj], str], None]] = {
    f.__name__: f for f in (check_command, check_ports, check_probes, check_grace, check_mounts,
                            check_writable, check_security, check_variant, check_rollout,
                            check_hpa, check_service_monitor)
}


# -- schemas -----------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation must not reach for the network."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def validate(obj: Obj, where: str) -> None:
    for version in SCHEMA_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            raise AssertionError(f"{where} ({obj['kind']} {obj['metadata']['name']}), "
                                 f"Kubernetes {version}: {path}: {exc.message}") from None


def test_the_schemas_are_bundled() -> None:
    versions = kubernetes_validate.utils.all_versions()
    assert any(v.startswith(OLDEST_KUBERNETES + ".") for v in versions), versions
    assert SCHEMA_VERSIONS[-1] >= OLDEST_KUBERNETES


def test_the_layout() -> None:
    """Each object file is a resource of a kustomization (but the adapter's
    rule, which lives in the adapter's namespace), each patch is used."""
    listed = set()
    for folder in (BASE, *(K8S / v for v in VARIANTS)):
        spec = kustomization(folder)
        listed |= {(folder / r).resolve() for r in spec.get("resources", [])}
        listed |= {(folder / p["path"]).resolve() for p in spec.get("patches", [])}
    files = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert files - listed == {ADAPTER.resolve()}
    assert {p.name for p in K8S.rglob("*.patch.yaml")} >= {"deployment.patch.yaml"}


@pytest.mark.parametrize("path", object_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_each_manifest_is_a_valid_object(path: Path, offline: None) -> None:
    for doc in load_documents(path):
        assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{path}: not a complete object"
        assert doc["metadata"].get("name"), path
        if not is_crd(doc):
            validate(doc, str(path.relative_to(K8S)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_rendered_object_is_valid(variant: str, rendered: dict[str, list[Obj]],
                                       offline: None) -> None:
    objects = rendered[variant]
    kinds = {o["kind"] for o in objects}
    assert kinds >= {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget",
                     "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor"}
    for obj in objects:
        assert obj["metadata"]["namespace"] == NAMESPACE
        if not is_crd(obj):
            validate(obj, variant)


def test_the_validator_is_strict(rendered: dict[str, list[Obj]], offline: None) -> None:
    deployment = copy.deepcopy(one(rendered["gpu"], "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 1
    with pytest.raises(AssertionError, match="prot"):
        validate(deployment, "broken")
    deployment = copy.deepcopy(one(rendered["cpu"], "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "x"
    with pytest.raises(AssertionError):
        validate(deployment, "broken")


def _kustomize(folder: Path) -> list[Obj] | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    proc = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "KUBECONFIG": "/dev/null"})
    assert proc.returncode == 0, proc.stderr
    docs: list[Obj] = list(yaml.safe_load_all(proc.stdout))
    return docs


@pytest.mark.parametrize("variant", VARIANTS)
def test_render_agrees_with_kustomize(variant: str, rendered: dict[str, list[Obj]]) -> None:
    theirs = _kustomize(K8S / variant)
    if theirs is None:
        pytest.skip("kubectl is not installed")
    generated = [g["name"] for g in kustomization(BASE).get("configMapGenerator", [])]
    # kustomize suffixes the generated names with a hash of the content.
    text = json.dumps(theirs)
    for name in generated:
        text = re.sub(rf'"{re.escape(name)}-[a-z0-9]{{10}}"', f'"{name}"', text)
    theirs = json.loads(text)

    def keyed(objects: list[Obj]) -> dict[tuple[str, str], Obj]:
        return {(o["kind"], o["metadata"]["name"]): o for o in objects}

    assert keyed(rendered[variant]) == keyed(theirs)


# -- agreement with the code ---------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("check", list(CHECKS))
def test_the_manifests_agree_with_the_code(check: str, variant: str,
                                           rendered: dict[str, list[Obj]]) -> None:
    CHECKS[check](rendered[variant], variant)


def test_the_configuration_is_the_one_documented(rendered: dict[str, list[Obj]]) -> None:
    config, _ = effective(rendered["gpu"])
    assert config.server.audit_log == f"/var/log/appliance/{POD_NAME}.jsonl"
    assert [spec.path for spec in config.lists] == ["/lists/lists-0001.snap"]
    assert config.server.watch_lists_seconds == 0
    section = README.read_text(encoding="utf-8").partition("## Kubernetes: deploy/k8s")[2]
    assert section, "deploy/README.md: no Kubernetes section"
    assert str(config.server.health_port) in section
    assert "appliance-grpc" in section and "round_robin" in section
    # Every Secret the pods mount is one the README says to create, with its keys.
    for volume in pod_spec(rendered["gpu"])["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["secretName"] in section, volume["secret"]["secretName"]
            for item in volume["secret"]["items"]:
                assert item["key"] in section, item["key"]


# -- each check can fail -------------------------------------------------------


def _c(objects: list[Obj]) -> Obj:
    return container(objects)


def _set_env(name: str, value: str) -> Callable[[list[Obj]], None]:
    def change(objects: list[Obj]) -> None:
        env = _c(objects)["env"]
        env[:] = [v for v in env if v["name"] != name] + [{"name": name, "value": value}]
    return change


def _mount(path: str) -> Callable[[list[Obj]], Obj]:
    return lambda objects: next(m for m in _c(objects)["volumeMounts"] if m["mountPath"] == path)


BREAKAGES: dict[str, tuple[str, str, Callable[[list[Obj]], Any]]] = {
    # name: (variant, the check that must fail, the change)
    "probe-on-grpc-port": ("cpu", "check_probes",
                           lambda o: _c(o)["readinessProbe"]["grpc"].update(port=50051)),
    "tcp-probe": ("cpu", "check_probes", lambda o: _c(o).update(
        livenessProbe={"tcpSocket": {"port": 8086}, "periodSeconds": 10})),
    "short-startup": ("gpu", "check_probes",
                      lambda o: _c(o)["startupProbe"].update(failureThreshold=6)),
    "health-port-moved": ("cpu", "check_ports",
                          lambda o: _c(o)["ports"][1].update(containerPort=8087)),
    "config-port-changed": ("gpu", "check_ports", _set_env("APPLIANCE_SERVER_PORT", "50052")),
    "not-headless": ("cpu", "check_ports",
                     lambda o: one(o, "Service", "appliance-grpc")["spec"].pop("clusterIP")),
    "policy-opens-more": ("cpu", "check_ports", lambda o: one(o, "NetworkPolicy")["spec"][
        "ingress"].append({"ports": [{"port": 22}]})),
    "short-termination": ("cpu", "check_grace",
                          lambda o: pod_spec(o).update(terminationGracePeriodSeconds=15)),
    "longer-grace": ("gpu", "check_grace", _set_env("APPLIANCE_SERVER_GRACE_SECONDS", "30")),
    "no-prestop": ("gpu", "check_grace", lambda o: _c(o).pop("lifecycle")),
    "tls-writable": ("cpu", "check_mounts",
                     lambda o: _mount("/etc/appliance/tls")(o).pop("readOnly")),
    "tls-moved": ("gpu", "check_mounts", lambda o: _mount("/etc/appliance/tls")(o).update(
        mountPath="/etc/tls")),
    "secret-world-readable": ("cpu", "check_mounts", lambda o: pod_spec(o)["volumes"][1][
        "secret"].update(defaultMode=0o444)),
    "lists-claim-writable": ("cpu", "check_mounts", lambda o: next(
        v for v in pod_spec(o)["volumes"] if v["name"] == "lists")["persistentVolumeClaim"].pop(
        "readOnly")),
    "audit-elsewhere": ("gpu", "check_mounts",
                        _set_env("APPLIANCE_SERVER_AUDIT_LOG", "/var/log/x/a.jsonl")),
    "snapshot-off-the-claim": ("cpu", "check_mounts",
                               lambda o: _c(o)["args"].extend(["--lists", "/srv/lists.snap"])),
    "cache-on-root": ("cpu", "check_writable", _set_env("NUMBA_CACHE_DIR", "/opt/numba")),
    "config-writable": ("gpu", "check_writable",
                        lambda o: _mount("/etc/appliance/config")(o).update(readOnly=False)),
    "root-writable": ("cpu", "check_security", lambda o: _c(o)["securityContext"].update(
        readOnlyRootFilesystem=False)),
    "runs-as-root": ("gpu", "check_security",
                     lambda o: pod_spec(o)["securityContext"].update(runAsUser=0)),
    "escalation": ("cpu", "check_security", lambda o: _c(o)["securityContext"].pop(
        "allowPrivilegeEscalation")),
    "no-gpu": ("gpu", "check_variant", lambda o: _c(o)["resources"]["limits"].pop(
        "nvidia.com/gpu")),
    "gpu-on-cpu": ("cpu", "check_variant", lambda o: _c(o)["resources"]["limits"].update(
        {"nvidia.com/gpu": "1"})),
    "workers-per-node-core": ("cpu", "check_variant", _set_env("APPLIANCE_SERVER_WORKERS", "64")),
    "backend-auto": ("gpu", "check_command", lambda o: _c(o)["args"].__delitem__(slice(2, 4))),
    "cpu-image-on-gpu": ("gpu", "check_command", lambda o: _c(o).update(
        image="registry.example.com/baseline-appliance:0.1.0-cpu")),
    "unknown-flag": ("cpu", "check_command", lambda o: _c(o)["args"].append("--no-such-flag")),
    "command-override": ("cpu", "check_command", lambda o: _c(o).update(command=["sleep"])),
    "replicas-set": ("cpu", "check_rollout",
                     lambda o: one(o, "Deployment")["spec"].update(replicas=3)),
    "pdb-selects-nothing": ("gpu", "check_rollout", lambda o: one(o, "PodDisruptionBudget")[
        "spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/name": "other"})),
    "hpa-metric-misspelt": ("cpu", "check_hpa", lambda o: one(o, "HorizontalPodAutoscaler")[
        "spec"]["metrics"][0]["pods"]["metric"].update(name="appliance_inflight_request")),
    "monitor-port-misspelt": ("cpu", "check_service_monitor", lambda o: one(
        o, "ServiceMonitor")["spec"]["endpoints"][0].update(port="metric")),
    "monitor-selects-grpc": ("gpu", "check_service_monitor", lambda o: one(
        o, "ServiceMonitor")["spec"]["selector"]["matchLabels"].pop(
        "app.kubernetes.io/component")),
    "monitor-path": ("cpu", "check_service_monitor", lambda o: one(
        o, "ServiceMonitor")["spec"]["endpoints"][0].update(path="/stats")),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_each_check_can_fail(breakage: str, rendered: dict[str, list[Obj]]) -> None:
    variant, check, change = BREAKAGES[breakage]
    CHECKS[check](rendered[variant], variant)  # whole, it passes
    broken = copy.deepcopy(rendered[variant])
    change(broken)
    assert broken != rendered[variant], "the change changed nothing"
    with pytest.raises(AssertionError):
        CHECKS[check](broken, variant)


def test_the_adapter_check_reads_the_rule(rendered: dict[str, list[Obj]]) -> None:
    rules = adapter_rules()
    check_hpa(rendered["cpu"], "cpu", rules)
    for field, value in (("seriesQuery", 'appliance_inflight_requets{namespace!=""}'),
                         ("metricsQuery", "sum(<<.Series>>)")):
        broken = copy.deepcopy(rules)
        broken[0][field] = value
        with pytest.raises(AssertionError):
            check_hpa(rendered["cpu"], "cpu", broken)


def test_strategic_merge_as_kustomize_merges() -> None:
    base = {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}], "args": ["1"]}],
            "volumes": [{"name": "v", "emptyDir": {}}], "tolerations": [{"key": "k"}]}
    patch = {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"},
                                                 {"name": "X", "value": "3"}], "args": ["2"]}],
             "tolerations": [{"key": "g"}]}
    assert strategic_merge(base, patch) == {
        "containers": [{"name": "a", "env": [{"name": "Y", "value": "2"},
                                             {"name": "X", "value": "3"}], "args": ["2"]}],
        "volumes": [{"name": "v", "emptyDir": {}}], "tolerations": [{"key": "g"}]}


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_no_secret_material_is_committed() -> None:
    for path in object_files():
        for doc in load_documents(path):
            assert doc["kind"] != "Secret", f"{path}: create Secrets, do not commit them"
            for node in _walk(doc):
                assert not (isinstance(node, str) and "PRIVATE KEY" in node), path
