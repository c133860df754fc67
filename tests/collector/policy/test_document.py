"""Policy documents: TOML written back reads as the same table; the form keeps the keys it does not show."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.policy.document import DocumentError, check_document, form_values, normalize, to_toml, with_form

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_scalar = st.one_of(_text, st.integers(-2**63, 2**63 - 1), st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False))
_key = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
_value = st.one_of(_scalar, st.lists(_text, max_size=4),
                   st.lists(st.dictionaries(_key, _scalar, max_size=3), max_size=3))


@settings(max_examples=300)
@given(table=st.dictionaries(_key, _value, max_size=6))
def test_toml_written_reads_back_as_the_same_table(table: dict[str, Any]) -> None:
    assert tomllib.loads(to_toml(table)) == table


DEVICES = ('sensitive_folders = ["/srv/finance"]\n'
           'company_devices = [{ vendor_id = "0781", product_id = "5581", serial = "4C53000" }]\n')


def test_the_form_edits_the_lists_and_keeps_company_devices() -> None:
    check_document(DEVICES)
    fields = form_values(DEVICES)
    assert fields["sensitive_folders"] == "/srv/finance" and fields["destinations"] == ""
    edited = with_form(DEVICES, {**fields, "sensitive_folders": "/srv/finance\n /home/*/Contracts ",
                                 "exclude_paths": "*.tmp"})
    table = tomllib.loads(edited)
    assert table["sensitive_folders"] == ["/srv/finance", "/home/*/Contracts"] and table["exclude_paths"] == ["*.tmp"]
    assert table["company_devices"] == [{"vendor_id": "0781", "product_id": "5581", "serial": "4C53000"}]
    check_document(edited)
    with pytest.raises(DocumentError) as bad:
        with_form(DEVICES, {**fields, "partial_match_share": "half"})
    assert bad.value.key == "partial_match_share"


def test_a_whole_agent_toml_becomes_its_policy_table_and_other_documents_stay_as_typed() -> None:
    assert normalize('[policy]\nsensitive_folders = ["/srv/x"]\n') == 'sensitive_folders = ["/srv/x"]\n'
    typed = '# finance\nsensitive_folders = ["/srv/x"]  # the share\n'
    assert normalize(typed) == typed  # comments kept: the hash is of what IT wrote
