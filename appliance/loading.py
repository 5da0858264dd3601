"""From the configuration's list specs to an index Snapshot."""

from __future__ import annotations

from dataclasses import dataclass

from appliance import demo
from appliance.config import Config
from appliance.index.snapshot import Snapshot
from appliance.lists import load_list
from appliance.lists.csv_format import parse_csv


@dataclass(frozen=True)
class Loaded:
    snapshot: Snapshot
    # list name -> where it came from (a path, or "embedded demo")
    sources: dict[str, str]

    @property
    def is_demo(self) -> bool:
        return set(self.sources.values()) == {"embedded demo"}


def load_snapshot(config: Config) -> Loaded:
    """Load every configured list, or the embedded demo list when none is.

    Raises ListError naming the file and its bad rows; nothing is half-loaded.
    """
    if not config.lists:
        hash_list = parse_csv(demo.build().list_csv, demo.LIST_NAME, source="embedded demo")
        return Loaded(Snapshot([hash_list], config.matching), {demo.LIST_NAME: "embedded demo"})
    lists = [load_list(spec.path, spec.name) for spec in config.lists]
    return Loaded(
        Snapshot(lists, config.matching), {spec.name: spec.path for spec in config.lists}
    )
