"""`tsunagu calibrate` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tsunagu.cli import main
from tsunagu.placement.throughput import REFERENCE_K, curve_loss

K = REFERENCE_K * 2


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "samples.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _good_csv() -> str:
    rows = ["rttMs,throughput", "0,100", "0,100"]
    rows += [f"{rtt},{100 * (1 - curve_loss(K, 0.0, rtt)):.4f}" for rtt in (5, 10, 15, 20, 30)]
    rows.append("# a comment line and a blank line are skipped")
    rows.append("")
    rows.append("12,nan")
    return "\n".join(rows) + "\n"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["calibrate", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_good_csv_prints_the_fit_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "-f", _write(tmp_path, _good_csv()), "-o", "json")
    assert (code, err) == (0, "")
    body = json.loads(out)
    assert body["trusted"] is True
    assert body["baselineSource"] == "local samples"
    assert body["model"]["kind"] == "ReferenceCurve"
    assert body["model"]["k"] == pytest.approx(K, rel=1e-3)
    assert body["samples"]["away"] == 5
    assert body["samples"]["ignored"] == [{"row": 11, "reason": "throughput is not a number > 0"}]
    assert [row["rttMs"] for row in body["lossByRtt"]] == [0, 5, 10, 15, 20, 30]


def test_table_says_why_a_fit_is_not_trusted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "-f", _write(tmp_path, "15,90\n15,91\n"), "--baseline", "100")
    assert code == 0
    assert "trusted     no: 2 usable samples away from the data (needs 5)" in out
    assert "samples at 1 distinct RTTs (needs 2)" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "rttMs,throughput\n1,2\n3,fast\n",
            "row 3, column throughput: must be a number (got 'fast')",
        ),
        ("ten,2\n", "row 1, column rttMs: must be a number (got 'ten')"),
        ("1,2\n1,2,3,4\n", "row 2: has 4 columns (needs rttMs,throughput[,baseline])"),
        ("1,2,x\n", "row 1, column baseline: must be a number (got 'x')"),
        ("rttMs,throughput\n", "holds no samples"),
    ],
)
def test_bad_input_exits_2_naming_row_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = _write(tmp_path, text)
    code, out, err = _run(capsys, "-f", path)
    assert code == 2
    assert out == ""
    assert err == f"tsunagu calibrate: {path}: {message}\n"


def test_bad_baseline_option_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "-f", _write(tmp_path, _good_csv()), "--baseline", "-1")
    assert code == 2
    assert "--baseline" in err


def test_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "fit.png"
    code, _, err = _run(capsys, "-f", _write(tmp_path, _good_csv()), "--plot", str(target))
    assert code == 0
    assert target.read_bytes().startswith(b"\x89PNG")
    assert f"wrote {target}" in err
