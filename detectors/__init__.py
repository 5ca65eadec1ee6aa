"""driftline's numerics: windows, performance metrics, drift statistics, change detectors.

Pure numpy/scipy, no I/O. Every class follows :mod:`detectors.base`: ``update_many`` on a
numpy batch, ``update`` for one event, ``result()`` -> :class:`~detectors.base.Result`,
``state()`` / ``from_state()`` as plain JSON.

* :mod:`detectors.windows`: CountWindow, BlockCounts, TumblingWindow, HoppingWindow
* :mod:`detectors.metrics`: Accuracy, Precision, Recall, F1, LogLoss, Brier,
  ExpectedCalibrationError, MAE, RMSE, Bias
* :mod:`detectors.drift`: PSI, KS, Wasserstein, JS, Chi2
* :mod:`detectors.change`: ADWIN, DDM, EDDM, HDDM_A, HDDM_W, PageHinkley, KSWIN
* :mod:`detectors.calibration`: multiple-testing correction, ERT threshold calibration
* :mod:`detectors.registry`: ``build(kind, params)``, ``restore(state)``, ``KINDS``
"""
