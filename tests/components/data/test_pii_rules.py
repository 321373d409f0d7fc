"""The redactor and the gate's checker agree on what PII is, on real code-heavy documentation.

The snippets are copied verbatim from docstrings of installed packages (the file is named with
each); none of them holds PII, and the gate stopped the pipeline on such text before."""

from collections import Counter

import pytest

from components.data.pii import find_spans, redact
from components.data.pii_check import find_pii
from components.data.pii_rules import (
    EMAIL,
    IP,
    PHONE,
    dotted_quad_is_address,
    email_counts,
    ip_counts,
    local_part,
)

DOCSTRINGS = {
    "typing.py (dataclass_transform)": """The ``CustomerModel`` classes defined above will
    be treated by type checkers similarly to classes created with
    ``@dataclasses.dataclass``.
    For example, type checkers will assume these classes have
    ``__init__`` methods that accept ``id`` and ``name``.""",
    "numpy/_typing/_nbit_base.py": """.. deprecated:: 2.3
    Use ``@typing.overload`` or a ``TypeVar`` with a scalar-type as upper
    bound, instead.""",
    "functools.py (cache)": "Simple lightweight unbounded cache.  Sometimes called "
    '"memoize".\n\n    @functools.lru_cache(maxsize=None)\n    def fib(n): ...',
    "ipaddress.py (summarize_address_range)": """Example:
        >>> list(summarize_address_range(IPv4Address('192.0.2.0'),
        ...                              IPv4Address('192.0.2.130')))
        ...                                #doctest: +NORMALIZE_WHITESPACE
        [IPv4Network('192.0.2.0/25'), IPv4Network('192.0.2.128/31'),
         IPv4Network('192.0.2.130/32')]""",
    "ipaddress.py (IPv6Address) with the other documentation ranges": (
        "IPv6Address('2001:db8::1000') and IPv4Address('198.51.100.7'), "
        "IPv4Address('203.0.113.254')"
    ),
    "smtplib.py (sendmail), addresses at RFC 2606 domains": """Example:
     >>> import smtplib
     >>> s=smtplib.SMTP("localhost")
     >>> tolist=["one@example.org","two@example.com","three@example.net","four@mail.example"]
     >>> s.sendmail("me@my.example",tolist,msg)""",
    "email/utils.py (parseaddr), an address without a top-level domain": (
        "parseaddr('Guido van Rossum <guido@localhost>') and 'user@host' in a Received header"
    ),
    "numpy/_core/multiarray.py (shares_memory)": """>>> x = np.array([1, 2, 3, 4])
    >>> np.shares_memory(x, np.array([5, 6, 7]))
    False
    >>> np.shares_memory(x[::2], x)
    True
    >>> np.shares_memory(x[::2], x[1::2])
    False""",
    "numpy/fft/_pocketfft.py (ifftn)": """array([[  0. +0.j        ,   0. +0.j        ],
       [-12.5 +4.0614962j ,   0.  +0.j        ]])""",
    "numpy/_core/getlimits.py (iinfo)": """>>> ii32 = np.iinfo(np.int32)
    >>> ii32.min
    -2147483648""",
    "pandas/core/resample.py (asfreq)": """>>> s
    2013-01-01 00:00:00    1
    2013-01-01 00:00:01    2
    2013-01-01 00:00:02    3
    Freq: s, dtype: int64""",
    "packaging-style version strings": "Version('1.2.3.4') < Version('1.2.3.4.post1'); "
    "requires python 3.11.7.2 and v10.0.0.1",
}


@pytest.mark.parametrize("name", sorted(DOCSTRINGS))
def test_documentation_holds_no_pii_for_either_detector(name):
    text = DOCSTRINGS[name]
    assert find_spans(text) == [], name
    assert find_pii(text) == Counter(), name


@pytest.mark.parametrize(
    "text, kind",
    [
        # The same shapes as above, but reachable: both detectors see them.
        ("contact ``guido@python.org`` for details", EMAIL),
        ("`jörg.müller@postbox.de`", EMAIL),  # a local part in another script (RFC 6531)
        (">>> ip_address('8.8.4.4')", IP),
        ("X-Forwarded-For: 2a00:1450:4001:81c::200e", IP),
        ("call (212) 555-2590 after 5pm", PHONE),
    ],
)
def test_the_same_shapes_with_real_pii_are_found_by_both_and_redacted(text, kind):
    assert [k for _, _, k in find_spans(text)] == [kind]
    assert find_pii(text) == Counter({kind: 1})
    assert find_pii(redact(text)[0]) == Counter()


def test_email_rules():
    assert local_part("see ``") == "" and local_part("``jane.doe") == "jane.doe"
    assert local_part("(.+jane") == "jane"
    assert email_counts("jane", "postbox.de") and email_counts("jane", "mail.python.org")
    assert not email_counts("", "dataclasses.dataclass")  # "@dataclasses.dataclass"
    assert not email_counts("obj", "functools.lru_cache")  # no such top-level domain
    for domain in ("example.com", "lists.example.org", "example.net", "host.test", "a.invalid"):
        assert not email_counts("jane", domain), domain


def test_address_rules():
    assert ip_counts("8.8.8.8") and ip_counts("2a00:1450:4001:81c::200e")
    for documentation in ("192.0.2.1", "198.51.100.7", "203.0.113.9", "2001:db8::1"):
        assert not ip_counts(documentation), documentation
    assert not ip_counts("::2") and not ip_counts("1::2")  # slices, grammars
    text = "v1.2.3.4, 8.8.8.8, version 8.8.4.4, 1.2.3.4.5"
    quads = [(0 + 1, 8), (10, 17), (27, 34), (36, 43)]
    assert [dotted_quad_is_address(text, a, b) for a, b in quads] == [False, True, False, False]


def test_a_numeric_table_is_not_a_phone():
    # pandas/core/frame.py (DataFrame.diff): digits across rows read as one number.
    text = """>>> df.diff()
     a    b     c
0  NaN  NaN   NaN
1  1.0  0.0   3.0
2  1.0  1.0   5.0
3  1.0  1.0   7.0
4  1.0  2.0   9.0
5  1.0  3.0  11.0"""
    assert find_spans(text) == [] and find_pii(text) == Counter()
