"""Marketer-written Liquid cannot reach Python, files, settings or unbounded work.

Each attempt is either refused (validation or render raises TemplateProblem) or renders inert text
that leaks nothing.
"""

from __future__ import annotations

import pytest
from django.conf import settings

from triggers.rendering import TemplateProblem, render, validate_source

CONTEXT = {"first_name": "Dana", "person": {"id": 1, "email": "dana@example.com", "traits": {}}}
SECRETS = [
    settings.SECRET_KEY,
    "dana@example.com\n",
    "<class",
    "object at 0x",
    "Traceback",
    "/work/",
]

CORPUS = [
    # Python attributes and dunders
    "{{ first_name.__class__ }}",
    "{{ first_name.__class__.__mro__ }}",
    "{{ person.__class__.__init__.__globals__ }}",
    "{{ person.__dict__ }}",
    "{{ first_name.upper }}",
    "{{ first_name.format }}",
    "{{ person.items }}",
    "{{ person['__class__'] }}",
    "{{ person._meta }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ self }}",
    "{{ settings.SECRET_KEY }}",
    "{{ request.META }}",
    "{{ os.environ }}",
    "{{ __builtins__ }}",
    "{{ forloop.__class__ }}",
    "{% for x in person %}{{ x.__class__ }}{% endfor %}",
    # Filters on objects
    "{{ person | json }}",
    "{{ person | map: '__class__' }}",
    "{{ person | attr: '__class__' }}",
    "{{ first_name | eval }}",
    "{{ first_name | system }}",
    "{{ person.traits | sort: '__class__' }}",
    "{{ first_name | append: person }}",
    # Includes, render, files
    "{% include 'config/settings/base.py' %}",
    "{% render '/etc/passwd' %}",
    "{% include '../../../../etc/passwd' %}",
    "{% render 'registration/login.html' %}",
    "{% load static %}",
    "{% import os %}",
    "{% python %}import os{% endpython %}",
    "{% raw %}{{ 7*7 }}{% endraw %}",
    # Django / Jinja syntax that must stay inert
    "{{ 7*7 }}",
    "{{ config.items() }}",
    "{% debug %}",
    "{{ lipsum.__globals__ }}",
    # Huge loops, output, recursion, depth
    "{% for i in (1..100000000) %}x{% endfor %}",
    "{% for i in (1..100000) %}{% for j in (1..100000) %}x{% endfor %}{% endfor %}",
    "{% assign s = 'xxxxxxxxxx' %}{% for i in (1..20) %}{% assign s = s | append: s %}{% endfor %}{{ s }}",
    "{% capture a %}{% for i in (1..1000000) %}aaaaaaaaaa{% endfor %}{% endcapture %}{{ a }}",
    "{% for a in (1..50) %}" * 30 + "x" + "{% endfor %}" * 30,
    "{% if true %}" * 500 + "x" + "{% endif %}" * 500,
    "{{ 'x' | append: 'x' | append: 'x' }}" * 2000,
    "{% cycle 'a' %}" * 10,
    "{% increment x %}" * 20000,
]


@pytest.mark.parametrize("source", CORPUS, ids=range(len(CORPUS)))
@pytest.mark.parametrize("html", [False, True], ids=["text", "html"])
def test_attempt_is_refused_or_inert(source, html):
    try:
        validate_source("body", source)
        rendered = render("", source, CONTEXT, html=html).body
    except TemplateProblem:
        return
    except RecursionError:  # pragma: no cover - must not happen
        pytest.fail("deep nesting reached Python's recursion limit")
    assert len(rendered) <= 100_000
    for secret in SECRETS:
        assert secret not in rendered, (source, rendered[:200])
    assert "49" not in rendered or "7*7" not in source


def test_the_corpus_is_large():
    assert len(CORPUS) >= 40
