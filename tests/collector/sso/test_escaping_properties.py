"""Whatever a person types as a user name, the LDAP filter keeps its configured shape and a DN names one RDN."""

from __future__ import annotations

import warnings

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.people.sso.ldap import escape_dn_value
from collector.settings import LdapSettings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import parse_dn

_NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)
_SPECIAL = st.text(st.sampled_from('*()\\\x00,+"<>;=# a'), min_size=1, max_size=20)


def _unescape_filter(value: str) -> str:
    out, i = bytearray(), 0
    raw = value.encode("utf-8")
    while i < len(raw):
        if raw[i:i + 1] == b"\\":
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8")


@settings(max_examples=300)
@given(st.one_of(_NAMES, _SPECIAL))
def test_an_escaped_name_in_a_filter_has_no_active_character_and_reads_back(name: str) -> None:
    escaped = escape_filter_chars(name)
    assert not set(escaped) & set("*()\x00")
    assert escaped.replace("\\2a", "").replace("\\28", "").replace("\\29", "").replace("\\5c", "") \
        .replace("\\00", "").count("\\") == 0
    assert _unescape_filter(escaped) == name
    cfg = LdapSettings(url="ldap://127.0.0.1:1", user_dn_template="uid={username},ou=people,dc=example,dc=com")
    assert cfg.user_filter.replace("{username}", escaped).count("(") == 1


@settings(max_examples=300)
@given(st.one_of(_NAMES, _SPECIAL).filter(lambda s: "\x00" not in s))
def test_an_escaped_name_in_a_dn_is_one_rdn_value(name: str) -> None:
    dn = f"uid={escape_dn_value(name)},ou=people,dc=example,dc=com"
    parts = parse_dn(dn, escape=False)
    assert [(a, s) for a, _, s in parts][1:] == [("ou", ","), ("dc", ","), ("dc", "")]
    assert parts[0][0] == "uid" and parts[0][2] == ","
