"""Fingerprint, planner and the plans.json schema (``load_plans`` / ``ConfigurationPlan``)."""
from medmamba.plans.schema import (
    DEFAULT_PLANS_NAME,
    PLANS_FORMAT_VERSION,
    ConfigurationPlan,
    NetworkSpec,
    Plans,
    ResamplingSettings,
    load_plans,
    plans_from_any,
    save_plans,
)

__all__ = [
    "DEFAULT_PLANS_NAME",
    "PLANS_FORMAT_VERSION",
    "ConfigurationPlan",
    "NetworkSpec",
    "Plans",
    "ResamplingSettings",
    "load_plans",
    "plans_from_any",
    "save_plans",
]
