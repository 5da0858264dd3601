"""List specs: every command-line spelling accepted or refused, and [[lists]] kinds."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance import config as cfg
from appliance.config import ListSpec
from appliance.errors import ConfigError
from appliance.lists import FORMATS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dir/list.csv", ListSpec("list", "dir/list.csv")),
        ("list.csv", ListSpec("list", "list.csv")),
        # No "=": the whole spec is the PATH, ":" and all.
        ("/srv/a:b.csv", ListSpec("a:b", "/srv/a:b.csv")),
        ("/srv/x:allow:nsrl.txt", ListSpec("x:allow:nsrl", "/srv/x:allow:nsrl.txt")),
        ("a=b.csv", ListSpec("a", "b.csv")),
        # Only the first "=" separates: the PATH may hold more.
        ("ab=/srv/a=b.csv", ListSpec("ab", "/srv/a=b.csv")),
        ("ab=/srv/a:b.csv", ListSpec("ab", "/srv/a:b.csv")),
        ("baseline:block=list.csv", ListSpec("baseline", "list.csv", kind="block")),
        ("nsrl:allow=NSRLFile.txt", ListSpec("nsrl", "NSRLFile.txt", kind="allow")),
        ("nsrl:allow:nsrl=NSRLFile.txt",
         ListSpec("nsrl", "NSRLFile.txt", format="nsrl", kind="allow")),
        ("rds:block:nsrl-sqlite=/srv/rds.db",
         ListSpec("rds", "/srv/rds.db", format="nsrl-sqlite", kind="block")),
        ("x:block:auto=x.csv", ListSpec("x", "x.csv", format="auto", kind="block")),
    ],
)
def test_accepted_specs(text: str, expected: ListSpec) -> None:
    assert ListSpec.parse(text) == expected


def test_a_spec_without_a_kind_says_auto() -> None:
    assert ListSpec.parse("nsrl=NSRLFile.txt").kind == "auto"
    assert ListSpec.parse("NSRLFile.txt").kind == "auto"
    assert ListSpec("n", "p").kind == "auto" and ListSpec("n", "p").format == "auto"


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_registered_format_can_be_named(fmt: str) -> None:
    assert ListSpec.parse(f"l:allow:{fmt}=p").format == fmt


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no file name"),
        ("/", "no file name"),
        ("=x.csv", "empty part"),
        ("a=", "PATH after '=' is empty"),
        ("a:block=", "PATH after '=' is empty"),
        (":block=x.csv", "empty part"),
        ("a:=x.csv", "empty part"),
        ("a::csv=x.csv", "empty part"),
        ("a:block:=x.csv", "empty part"),
        ("a:auto=x.csv", "unknown KIND 'auto'"),
        ("a:Block=x.csv", "unknown KIND 'Block'"),
        ("a:deny=x.csv", "unknown KIND 'deny'"),
        ("a:block:xml=x.csv", "unknown FORMAT 'xml'"),
        ("a:block:CSV=x.csv", "unknown FORMAT 'CSV'"),
        ("a:block:csv:x=x.csv", "3 ':', at most 2"),
        ("a:b:c:d:e=x.csv", "4 ':', at most 2"),
        # A PATH holding "=" without a NAME in front: not a name with "/" in it.
        ("/srv/a=b.csv", "not a NAME"),
    ],
)
def test_refused_specs_show_the_accepted_forms(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ListSpec.parse(text)
    message = str(caught.value)
    assert why in message, message
    assert cfg.SPEC_FORMS in message and "KIND: block or allow" in message, message
    assert "FORMAT: auto, csv" in message and "nsrl-sqlite" in message, message


def test_load_passes_kind_and_format_through(tmp_path: Path) -> None:
    config = cfg.load(lists=["nsrl:allow:nsrl=/x/NSRLFile.txt", "b:block=/x/b.csv", "/x/c.csv"])
    assert config.lists == (
        ListSpec("nsrl", "/x/NSRLFile.txt", format="nsrl", kind="allow"),
        ListSpec("b", "/x/b.csv", kind="block"),
        ListSpec("c", "/x/c.csv"),
    )
    with pytest.raises(ConfigError, match="unknown KIND"):
        cfg.load(lists=["b:maybe=/x/b.csv"])
    # Strings in the file's lists are specs too.
    path = tmp_path / "c.toml"
    path.write_text('lists = ["n:allow:nsrl=/x/NSRLFile.txt"]\n')
    assert cfg.load(str(path)).lists == (
        ListSpec("n", "/x/NSRLFile.txt", format="nsrl", kind="allow"),
    )


@pytest.mark.parametrize(
    ("table", "kind"),
    [('', "auto"), ('kind = "auto"\n', "auto"), ('kind = "block"\n', "block"),
     ('kind = "allow"\n', "allow")],
)
def test_list_tables_kinds(tmp_path: Path, table: str, kind: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[[lists]]\nname = "n"\npath = "/x/NSRLFile.txt"\n{table}')
    [spec] = cfg.load(str(path)).lists
    assert spec.kind == kind


@pytest.mark.parametrize(
    ("table", "message"),
    [('kind = "deny"\n', "kind must be block or allow"),
     ('kind = "Allow"\n', "kind must be block or allow"),
     ('format = "xml"\n', "unknown format 'xml'")],
)
def test_list_tables_refused(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[[lists]]\nname = "n"\npath = "/x/l.csv"\n{table}')
    with pytest.raises(ConfigError, match=message):
        cfg.load(str(path))
