"""The audit: what each direction really changes, as judged by pixel classifiers that share nothing with the flow."""

from latentlab.audit.effects import DirectionEffect, direction_effect
from latentlab.audit.judges import Judges, fit_judges
from latentlab.audit.run import AuditResult, run_audit

__all__ = ["AuditResult", "DirectionEffect", "Judges", "direction_effect", "fit_judges", "run_audit"]
