"""The names of driftline's detectors, as the config, the rules and checkpoints write them.

The registry's table of names, and the one place they are spelled: each class takes its
``kind`` from here, :mod:`detectors.registry` maps the names to the classes (and derives the
finer families, such as the regression metrics, from what the classes say of themselves), and
the rules check the statistics they name against these. This module imports nothing, so that
the rules and the config schema can name detectors without loading numpy and scipy.

>>> "psi" in DRIFT_KINDS, "psi" in CHANGE_KINDS
(True, False)
"""

#: performance metrics over a count window of labelled pairs
ACCURACY, PRECISION_MACRO, RECALL_MACRO, F1_MACRO, LOG_LOSS, BRIER, ECE, MAE, RMSE, BIAS = METRIC_KINDS = (
    "accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss", "brier", "ece", "mae", "rmse", "bias")
#: two-sample drift statistics of a feature or the prediction against a reference
PSI, KS, WASSERSTEIN, JS, CHI2 = DRIFT_KINDS = ("psi", "ks", "wasserstein", "js", "chi2")
#: change detectors on the stream of a model's errors
ADWIN, DDM, EDDM, HDDM_A, HDDM_W, PAGE_HINKLEY, KSWIN = CHANGE_KINDS = (
    "adwin", "ddm", "eddm", "hddm_a", "hddm_w", "page_hinkley", "kswin")
#: the metrics estimated from the scores before labels arrive (``estimated.<metric>`` in rules)
ESTIMATED_METRICS = ("accuracy", "precision", "recall", "f1")
#: the estimator of those metrics (not built by the registry: a model has one, from its config)
CBPE = "cbpe"
#: event-time windows, each holding a detector per window
TUMBLING, HOPPING = EVENT_WINDOW_KINDS = ("tumbling", "hopping")
