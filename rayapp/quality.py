"""Named expectations for bronze -> silver and what happens to a row that fails one.

Actions: ``warn`` (count it; the offending value becomes null and the row continues), ``drop``
(the row goes to quarantine with every rule it failed), ``fail`` (stop the run before anything
is committed when more than a threshold share of the run's rows fail the rule; plain ``fail``
means any row). A run-wide ``max_quarantine_pct`` stops the run when too much is quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from rayapp.errors import RayappError


class Action(str, Enum):
    WARN = "warn"
    DROP = "drop"
    FAIL = "fail"


#: Rule names in evaluation order, with their default actions.
DEFAULT_RULES: dict[str, Action] = {
    "missing_transaction_id": Action.DROP,
    "missing_account_id": Action.DROP,
    "missing_merchant_id": Action.DROP,
    "invalid_amount": Action.DROP,
    "invalid_currency": Action.DROP,
    "invalid_channel": Action.DROP,
    "invalid_status": Action.DROP,
    "invalid_event_time": Action.DROP,
    "invalid_updated_at": Action.DROP,
    "field_too_long": Action.DROP,  # a value over its field's limit (see transforms.silver.FIELD_MAX_CHARS)
    "malformed_row": Action.DROP,  # a row the landing parser could not read whole (a truncated last row)
    "invalid_country": Action.WARN,
}


class ExpectationFailed(RayappError):
    """A blocking expectation stopped the run; nothing was committed."""


@dataclass(frozen=True)
class RulePolicy:
    action: Action
    fail_above_pct: float = 0.0  # for FAIL: tolerated share of failing rows, in percent


@dataclass(frozen=True)
class Expectations:
    """The rule set of a run."""

    rules: dict[str, RulePolicy] = field(default_factory=lambda: {n: RulePolicy(a) for n, a in DEFAULT_RULES.items()})
    max_quarantine_pct: float | None = None

    @classmethod
    def from_specs(cls, specs: list[str], max_quarantine_pct: float | None = None) -> "Expectations":
        """Build from ``RULE=ACTION`` strings, e.g. ``invalid_currency=fail:0.5`` or ``invalid_country=drop``.

        Raises:
            RayappError: unknown rule or action.
        """
        rules = {n: RulePolicy(a) for n, a in DEFAULT_RULES.items()}
        for spec in specs:
            name, _, action = spec.partition("=")
            name = name.strip()
            if name not in rules:
                raise RayappError(f"unknown expectation {name!r}; known: {', '.join(DEFAULT_RULES)}")
            act, _, pct = action.strip().partition(":")
            try:
                rules[name] = RulePolicy(Action(act), float(pct) if pct else 0.0)
            except ValueError:
                raise RayappError(f"bad action {action!r} for {name}: use warn, drop, fail or fail:<percent>") from None
        if max_quarantine_pct is not None and not 0 <= max_quarantine_pct <= 100:
            raise RayappError("max quarantine percent must be between 0 and 100")
        return cls(rules, max_quarantine_pct)

    def quarantining(self) -> list[str]:
        """Rules whose failing rows leave the data flow (drop and fail)."""
        return [n for n, p in self.rules.items() if p.action in (Action.DROP, Action.FAIL)]

    def check(self, rows_in: int, rule_counts: dict[str, int], quarantined: int) -> None:
        """Raise :class:`ExpectationFailed` if a blocking condition holds for this run's counts."""
        if rows_in == 0:
            return
        for name, policy in self.rules.items():
            n = rule_counts.get(name, 0)
            if policy.action is Action.FAIL and n and 100.0 * n / rows_in > policy.fail_above_pct:
                raise ExpectationFailed(
                    f"expectation {name} failed for {n} of {rows_in} rows "
                    f"({100.0 * n / rows_in:.2f}% > {policy.fail_above_pct}%); nothing committed"
                )
        if self.max_quarantine_pct is not None and 100.0 * quarantined / rows_in > self.max_quarantine_pct:
            raise ExpectationFailed(
                f"{quarantined} of {rows_in} rows quarantined ({100.0 * quarantined / rows_in:.2f}% > "
                f"{self.max_quarantine_pct}%); nothing committed"
            )
