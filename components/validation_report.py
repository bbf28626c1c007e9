"""What a data validation result says to a person (Markdown, metrics) and to the training gate.

`components.data_validation` runs in the `tfdv` runtime and returns a JSON summary; this module
is plain Python, importable in every runtime, so the component bodies, the CLI and the tests read
that summary the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

SEVERITY_ORDER = ("error", "warning", "unknown")


class DataAnomaliesError(RuntimeError):
    """Validation found anomalies and the problem says they stop the pipeline; names the features."""


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    """One dataset's validation: `anomalies` are {feature, kind, severity, description} dicts."""

    dataset: str
    rows: int
    environment: str
    comparison: str  # "drift", "skew", or "" when there was no baseline
    anomalies: list[dict[str, str]]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ValidationResult:
        return cls(**{field.name: data[field.name] for field in dataclasses.fields(cls)})

    @property
    def features(self) -> list[str]:
        return sorted({anomaly["feature"] for anomaly in self.anomalies})

    def counts(self) -> dict[str, int]:
        """Anomalies by severity, every severity present (zeros included), for a `Metrics` artifact."""
        return {severity: sum(a["severity"] == severity for a in self.anomalies) for severity in SEVERITY_ORDER}

    def headline(self) -> str:
        if not self.anomalies:
            return f"{self.dataset}: no anomalies in {self.rows:,} rows ({self._against()})"
        return (f"{self.dataset}: {len(self.anomalies)} anomalies in {', '.join(self.features)} "
                f"({self.rows:,} rows, {self._against()})")

    def _against(self) -> str:
        baseline = f", {self.comparison} from the training statistics" if self.comparison else ""
        return f"checked against the schema in the {self.environment} environment{baseline}"

    def markdown(self) -> str:
        lines = [f"# Data validation: {self.dataset}", "", self.headline() + "."]
        if self.anomalies:
            lines += ["", "| feature | anomaly | severity | description |", "|---|---|---|---|"]
            lines += [f"| `{a['feature']}` | {_cell(a['kind'])} | {a['severity']} | {_cell(a['description'])} |"
                      for a in self.anomalies]
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        """The CLI's report: the headline, then one line per anomaly."""
        return "\n".join([self.headline()] + [f"  {a['feature']}: {a['kind']} ({a['severity']}): {a['description']}"
                                              for a in self.anomalies])


def gate(result: ValidationResult, fail_on_anomalies: bool) -> None:
    """Stops the pipeline on anomalies when the problem says so (`validation.fail_on_anomalies`)."""
    if result.anomalies and fail_on_anomalies:
        raise DataAnomaliesError(
            f"data validation failed: {result.headline()}. Fix the data, or review and pin a schema "
            f"(`pinned_schema`) that accepts it, or set validation.fail_on_anomalies: false to only warn. "
            + "; ".join(f"{a['feature']}: {a['kind']}" for a in result.anomalies))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()
