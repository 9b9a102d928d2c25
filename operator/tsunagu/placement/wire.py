"""How a decision's numbers are written down — in a TrainingJob's status and in `tsunagu plan`'s
JSON alike — so the two never disagree on a figure: RTT to the microsecond, losses and scores to
six places."""

from __future__ import annotations

RTT_DIGITS = 3
LOSS_DIGITS = 6
SCORE_DIGITS = 6


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def decision_numbers(
    rtt_ms: float | None, predicted_loss: float | None, score: float | None = None
) -> dict[str, float | None]:
    """`rttMs`, `predictedThroughputLoss` and `score`, rounded; None where not known."""
    return {
        "rttMs": _rounded(rtt_ms, RTT_DIGITS),
        "predictedThroughputLoss": _rounded(predicted_loss, LOSS_DIGITS),
        "score": _rounded(score, SCORE_DIGITS),
    }


def known_numbers(
    rtt_ms: float | None, predicted_loss: float | None, score: float | None = None
) -> dict[str, float]:
    """The same, without the ones not known (status leaves unknown fields out)."""
    numbers = decision_numbers(rtt_ms, predicted_loss, score)
    return {name: value for name, value in numbers.items() if value is not None}
