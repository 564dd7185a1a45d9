"""``manage.py ab_calc``: the JSON shape of DESIGN §3.5, the table with its verdict, and errors."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from triggers.stats import Arm, analyse


def ab_calc(*args: str) -> str:
    out = StringIO()
    call_command("ab_calc", *args, stdout=out)
    return out.getvalue()


def test_json_has_exactly_the_documented_shape():
    output = ab_calc(
        "--arm", "holdout=50/1000", "--arm", "a=260/4500", "--arm", "b=240/4500",
        "--weights", "10,45,45", "--format", "json",
    )  # fmt: skip
    result = json.loads(output)
    assert list(result) == ["arms", "comparisons", "srm"]
    assert result["arms"][0] == {
        "name": "holdout",
        "users": 1000,
        "conversions": 50,
        "rate": 0.05,
        "ci": result["arms"][0]["ci"],
    }
    assert all(
        list(arm) == ["name", "users", "conversions", "rate", "ci"] for arm in result["arms"]
    )
    assert [list(c) for c in result["comparisons"]] == [
        [
            "arm",
            "control",
            "difference",
            "difference_ci",
            "relative_lift",
            "relative_lift_ci",
            "p_value",
            "p_value_holm",
            "chance_to_beat_control",
            "expected_loss",
        ]
    ] * 2
    assert [(c["arm"], c["control"]) for c in result["comparisons"]] == [
        ("a", "holdout"),
        ("b", "holdout"),
    ]
    assert list(result["comparisons"][0]["expected_loss"]) == ["ship", "keep"]
    assert result["srm"] == {
        "expected_weights": [0.1, 0.45, 0.45],
        "chi2": pytest.approx(0.0),
        "p_value": pytest.approx(1.0),
        "mismatch": False,
    }
    assert all(len(arm["ci"]) == 2 for arm in result["arms"])


def test_json_is_the_analysis():
    output = ab_calc("--arm", "a=500/10000", "--arm", "b=560/10000", "--format", "json")
    expected = analyse([Arm("a", 10_000, 500), Arm("b", 10_000, 560)]).as_dict()
    assert json.loads(output) == json.loads(json.dumps(expected))


def test_control_defaults_to_the_first_arm_and_can_be_chosen():
    first = json.loads(ab_calc("--arm", "a=5/100", "--arm", "b=9/100", "--format", "json"))
    assert first["comparisons"][0]["control"] == "a"
    chosen = json.loads(
        ab_calc("--arm", "a=5/100", "--arm", "b=9/100", "--control", "b", "--format", "json")
    )
    assert [(c["arm"], c["control"]) for c in chosen["comparisons"]] == [("a", "b")]


def test_json_uses_null_for_undefined_numbers():
    result = json.loads(ab_calc("--arm", "a=0/100", "--arm", "b=3/100", "--format", "json"))
    comparison = result["comparisons"][0]
    assert comparison["relative_lift"] is None and comparison["relative_lift_ci"] is None


def test_table_shows_rates_comparisons_and_a_verdict():
    output = ab_calc("--arm", "control=500/10000", "--arm", "b=650/10000")
    assert "control" in output and "10,000" in output and "5.00%" in output
    assert "b vs control" in output
    assert "+1.50 pp" in output  # difference
    assert "+30.00%" in output  # relative lift
    assert "chance to beat" in output and "expected loss" in output
    assert "Sample ratio (50/50)" in output and "— ok" in output
    assert output.strip().splitlines()[-1].startswith("Verdict: b beats control")


def test_table_without_a_significant_difference():
    output = ab_calc("--arm", "a=500/10000", "--arm", "b=510/10000")
    assert "Verdict: b: no significant difference from a" in output


def test_table_withholds_the_verdict_loudly_on_sample_ratio_mismatch():
    output = ab_calc("--arm", "a=500/5000", "--arm", "b=650/5400")
    assert "MISMATCH" in output
    assert "SRM: no verdict" in output
    assert "!!!!!!!!" in output
    assert "Verdict:" not in output


def test_holm_with_several_variants_in_the_table():
    output = ab_calc("--arm", "a=500/10000", "--arm", "b=580/10000", "--arm", "c=505/10000")
    assert "Holm-adjusted" in output
    assert "33.3/33.3/33.3" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arm", "a=5/10", "--arm", "b=12/10"], "--arm b=12/10: conversions exceed users"),
        (["--arm", "a=5/10", "--arm", "b=12"], "--arm b=12: expected NAME=CONVERSIONS/USERS"),
        (["--arm", "a=5/10", "--arm", "b=-1/10"], "--arm b=-1/10: expected NAME"),
        (["--arm", "a=5/10", "--arm", "=1/10"], "--arm =1/10: expected NAME"),
        (["--arm", "a=5/10", "--arm", "a=1/10"], "--arm a=1/10: duplicate arm name 'a'"),
        (["--arm", "a=5/10"], "--arm: give at least two arms"),
        (["--arm", "a=5/10", "--arm", "b=1/10", "--control", "z"], "--control z: no arm"),
        (["--arm", "a=5/10", "--arm", "b=1/10", "--weights", "1"], "--weights 1: expected 2"),
        (["--arm", "a=5/10", "--arm", "b=1/10", "--weights", "1,x"], "--weights 1,x: 'x'"),
        (["--arm", "a=5/10", "--arm", "b=1/10", "--weights", "1,0"], "--weights 1,0: every"),
        (["--arm", "a=5/10", "--arm", "b=1/10", "--weights", "1,inf"], "--weights 1,inf"),
    ],
)
def test_bad_input_names_the_argument(args, message):
    with pytest.raises(CommandError) as error:
        ab_calc(*args)
    assert str(error.value).startswith(message)


def test_arm_is_required():
    with pytest.raises(CommandError, match="--arm"):
        ab_calc("--format", "json")
