"""Time zones by name (host side): IANA names become the POSIX rule the terminal runs on."""

from __future__ import annotations

import pytest
from clockterm_host import tznames


@pytest.mark.parametrize(("given", "rule"), [
    ("Europe/Berlin", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("America/New_York", "EST5EDT,M3.2.0,M11.1.0"),
    ("Asia/Kolkata", "IST-5:30"),
    ("UTC", "UTC0"),
    ("Etc/GMT+5", "<-05>5"),
    ("CET-1CEST,M3.5.0,M10.5.0/3", "CET-1CEST,M3.5.0,M10.5.0/3"),  # a rule passes unchanged
    ("EST5EDT", "EST5EDT"),
])
def test_names_become_rules(given: str, rule: str) -> None:
    assert tznames.resolve(given) == rule


@pytest.mark.parametrize("bad", ["Europe/Nowhere", "../etc/passwd", "Europe/../../etc/passwd", "Nowhere"])
def test_unknown_names_are_refused_with_what_the_field_takes(bad: str) -> None:
    with pytest.raises(tznames.TZNameError) as e:
        tznames.resolve(bad)
    assert bad in str(e.value)
