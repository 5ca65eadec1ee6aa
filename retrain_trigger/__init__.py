"""Retrain triggers: rules (``rules``), the per-model policy the Monitor runs (``policy``),
the trigger event and its JSON Schema (``events``), and the downstream listener (``listener``).

See retrain_trigger/README.md. Nothing here imports ``streams``; ``listener`` is the only
module that needs Kafka, so importing the rest stays cheap.
"""
