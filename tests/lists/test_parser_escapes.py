"""Malformed input that once could, or easily could, escape a parser as
something other than ListError: lone surrogates, deep nesting, huge numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import ListError
from appliance.lists import load_list

MD5 = "0" * 32
CASES = {
    # JSON "\ud800" decodes to a lone surrogate, which no UTF-8 answer carries.
    "vics-surrogate-id": ("v.json", '{"@odata.context":"x","value":'
                          f'[{{"MediaID":"\\ud800","MD5":"{MD5}"}}]}}', "not valid Unicode"),
    "vics-surrogate-category": ("v.json", '{"@odata.context":"x","value":'
                                f'[{{"MediaID":1,"Category":"a\\udfff","MD5":"{MD5}"}}]}}',
                                "not valid Unicode"),
    "stopncii-surrogate-case": ("s.json", '[{"signalType":"md5","hashValue":"' + MD5
                                + '","caseNumbers":{"\\ud83d":"Active"}}]', "not valid Unicode"),
    "json-deep": ("v.json", '{"@odata.context":"x","value":[' + "[" * 100_000
                  + "]" * 100_000 + "]}", "nested too deeply"),
    "json-huge-int": ("s.json", '[{"signalType":"md5","hashValue":"' + MD5 + '","id":'
                      + "9" * 5000 + "}]", "invalid JSON"),
    "xml-deep": ("n.xml", '<queryResult xmlns="https://hashsharing.ncmec.org/hashsharing/v2">'
                 "<image>" + "<a>" * 100_000 + "</a>" * 100_000 + "</image></queryResult>",
                 "no fingerprint"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_input_is_a_list_error(tmp_path: Path, case: str) -> None:
    name, text, reason = CASES[case]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ListError, match=reason) as caught:
        load_list(str(path), "l")
    str(caught.value).encode("utf-8")  # the report itself goes into a gRPC answer
