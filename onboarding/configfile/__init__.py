"""Configuration as code (DESIGN §3.4): flows, segments … exported and imported as one YAML file.

Each object kind is a :class:`~onboarding.configfile.sections.Section` with its own validate,
plan/apply and export; :mod:`onboarding.configfile.document` runs them in order.
"""
