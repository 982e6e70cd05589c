"""`python -m billing`: output people and scripts can use, exit code 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from billing.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_quote_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quote", "standard", "200000", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["product"] == "standard"
    assert payload["calls"] == 200_000
    assert payload["currency"] == "usd"
    assert payload["total"] == 18_995
    assert [line["amount"] for line in payload["lines"]] == [8_995, 10_000]
    assert all(isinstance(line["description"], str) and line["description"] for line in payload["lines"])


def test_quote_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quote", "developer", "1100"]) == 0
    assert "USD 2.00" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["quote", "platinum", "10"], "unknown product 'platinum'"),
        (["quote", "payg", "-5"], "0 or more"),
        (["quote", "payg", "ten"], "not a whole number"),
        (["quote", "payg", "1.5"], "not a whole number"),
        (["policy", "gold"], "unknown product 'gold'"),
    ],
)
def test_bad_input_exits_2_with_message(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(main(argv))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_validate_lists_products(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "validate"]) == 0
    out = capsys.readouterr().out
    for expected in ("enterprise", "USD 749.95", "1,500,000", "50,000/month", "3,500"):
        assert expected in out


def test_validate_bad_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "models.json"
    bad.write_text(
        '{"products": [{"id": "x", "displayName": "X", "description": "d", "pricingModel": "Tier", "apis": ["echo"]}]}'
    )
    assert main(["models", "validate", "--file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "product 'x' (products[0]), field 'flatFee'" in err
    assert "field 'quota'" in err


def test_policy_prints_xml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "basic"]) == 0
    assert '<quota-by-key calls="50000" renewal-period="0" counter-key="@(context.Subscription.Id)"' in (
        capsys.readouterr().out
    )
    assert main(["policy", "basic", "--tier", "StandardV2"]) == 0
    assert '<quota calls="50000" renewal-period="2592000" />' in capsys.readouterr().out


def test_module_entry_point_runs_as_a_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "billing", "quote", "enterprise", "abc"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "not a whole number" in done.stderr
    assert "Traceback" not in done.stderr
