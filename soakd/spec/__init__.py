"""The soak spec: YAML in, a frozen, validated :class:`Spec` out.

``load_spec`` / ``load_spec_text`` are the entry points; the unit parsers and
the alert-phrase parser are exported for the CLI (``--duration 10m``) and docs.
"""

from soakd.spec.loader import apply_overrides, fingerprint, load_spec, load_spec_text
from soakd.spec.model import Spec
from soakd.spec.phrases import RECOGNISED_PHRASES, parse_alert_phrase
from soakd.spec.units import parse_duration, parse_rate, parse_size

__all__ = [
    "RECOGNISED_PHRASES",
    "Spec",
    "apply_overrides",
    "fingerprint",
    "load_spec",
    "load_spec_text",
    "parse_alert_phrase",
    "parse_duration",
    "parse_rate",
    "parse_size",
]
