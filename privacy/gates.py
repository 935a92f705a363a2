"""Run-level quality gates: too many failed inputs, too many corrupt frames in a segment.

The failure-rate gate: a run where too many inputs failed fails instead of publishing.

Beam's ``with_exception_handling`` lets every element fail and still call the job
a success (PRIVACY.md 17). Here an input counts as failed when any dead letter
names it (a bad manifest line, a file that is not a recording, a segment that
could not be anonymized); the rate is failed inputs over inputs found. Above
``--max-failure-rate`` nothing is published: the dead letters and the reason stay
in the run's staging folder and ``egoveil run`` exits non-zero with one line.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

DEFAULT_MAX_FAILURE_RATE = 0.1
FAILURE_RATE_JSON = "failure_rate.json"  # under the run's staging folder
STAGED_DEADLETTERS = "deadletters.jsonl"


@dataclass(slots=True)
class FailureRateGate:
    """Whether a run's failed inputs stay within ``max_rate``.

    Args:
        max_rate: the largest fraction of inputs allowed to fail (0 to 1).
        inputs: inputs found (recordings and manifest lines).
        failed: inputs named by at least one dead letter.
        deadletters: the dead letters, as dicts.
    """

    max_rate: float
    inputs: int
    failed: int
    deadletters: list[dict]

    @property
    def rate(self) -> float:
        return self.failed / self.inputs if self.inputs else 0.0

    @property
    def passed(self) -> bool:
        return self.rate <= self.max_rate

    def to_dict(self) -> dict:
        reasons = Counter(d["reason"] for d in self.deadletters)
        return {"inputs": self.inputs, "failed": self.failed, "rate": round(self.rate, 4),
                "max_failure_rate": self.max_rate, "reasons": dict(sorted(reasons.items()))}

    def staged_files(self) -> dict[str, bytes]:
        """The verdict and the dead letters, by file name, for the run's staging folder."""
        return {FAILURE_RATE_JSON: json.dumps(self.to_dict(), sort_keys=True).encode(),
                STAGED_DEADLETTERS: "".join(json.dumps(d, sort_keys=True) + "\n"
                                            for d in self.deadletters).encode()}


def failure_rate_message(verdict: dict, staging_name: str) -> str:
    """One line saying why a run failed the gate, from its ``failure_rate.json``."""
    reasons = ", ".join(f"{n} {reason}" for reason, n in
                        sorted(verdict["reasons"].items(), key=lambda kv: (-kv[1], kv[0])))
    return (f"{verdict['failed']} of {verdict['inputs']} inputs failed ({verdict['rate']:.0%}), "
            f"above --max-failure-rate {verdict['max_failure_rate']:g}; nothing was published "
            f"(dead letters: {reasons}; listed in .staging/{staging_name}/{STAGED_DEADLETTERS})")


def corrupt_share_exceeded(decoded: int, corrupt: int, max_fraction: float) -> bool:
    """Whether a segment lost more of its frames to corruption than a run allows."""
    total = decoded + corrupt
    return bool(total) and corrupt / total > max_fraction
