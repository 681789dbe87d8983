"""Alert rules: pure functions over the run store's windows, and their state machine.

``gather_inputs`` (blocking, run it in a thread) reads the windows;
``evaluate_rule`` judges one rule (pure); ``AlertEngine`` applies ``for`` and
the inactive -> pending -> firing -> resolved states. ``leak_fit`` and
``cadence_summary`` are also what the report uses for its memory and cadence
sections. See docs/alerting.md for each rule's definition and defaults.
"""

from soakd.rules.cadence import CadenceSummary, cadence_summary
from soakd.rules.engine import AlertEngine, alert_key
from soakd.rules.evaluate import (
    DERIVED_METRICS,
    RuleResult,
    evaluate_rule,
    leak_verdict,
    threshold_value,
)
from soakd.rules.inputs import EVENT_KINDS, RuleInputs, downsample, gather_inputs
from soakd.rules.leak import LeakFit, leak_fit
from soakd.rules.windows import Windows, default_windows

__all__ = [
    "DERIVED_METRICS",
    "EVENT_KINDS",
    "AlertEngine",
    "CadenceSummary",
    "LeakFit",
    "RuleInputs",
    "RuleResult",
    "Windows",
    "alert_key",
    "cadence_summary",
    "default_windows",
    "downsample",
    "evaluate_rule",
    "gather_inputs",
    "leak_fit",
    "leak_verdict",
    "threshold_value",
]
