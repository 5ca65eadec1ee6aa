"""driftline's numerics: windows, performance metrics, drift statistics, change detectors.

Pure numpy/scipy, no I/O. Every class follows :mod:`detectors.base`: ``update_many`` on a
numpy batch, ``update`` for one event, ``result()`` -> :class:`~detectors.base.Result`,
``state()`` / ``from_state()`` as plain JSON.

* :mod:`detectors.windows`: CountWindow, BlockCounts (count windows the detectors keep)
* :mod:`detectors.metrics`: Accuracy, Precision, Recall, F1, LogLoss, Brier,
  ExpectedCalibrationError, MAE, RMSE, Bias
* :mod:`detectors.drift`: PSI, KS, Wasserstein, JS, Chi2
* :mod:`detectors.change`: ADWIN, DDM, EDDM, HDDM_A, HDDM_W, PageHinkley, KSWIN
* :mod:`detectors.estimation`: CBPE, performance estimated from the scores before labels arrive
* :mod:`detectors.calibration`: multiple-testing correction, false-alarm threshold calibration
* :mod:`detectors.kinds`: the detectors' names, the one place they are spelled (imports nothing)
* :mod:`detectors.registry`: names to classes and families, ``build(kind, params)``,
  ``restore(state)``
* :mod:`detectors.event_windows`: TumblingWindow, HoppingWindow (a detector per event-time
  window, built through the registry)

Imports go one way, each layer using only those before it: kinds, base; windows, calibration;
metrics, estimation, drift, change; registry; event_windows.
"""
