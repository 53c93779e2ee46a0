"""Fingerprint and planner: pure decisions from the dataset's fingerprint to plans.json.

The plans.json schema itself (``Plans``, ``ConfigurationPlan``, ``load_plans``) is a file contract
and lives in :mod:`medmamba.formats.plans`.
"""
