"""evaluation stage: metrics with bootstrap SEs, fidelity to the original model, clinical guard rails.

Heavy libraries (torch, MONAI) are imported inside the functions that need them.
"""
from medexport.evaluation.bootstrap import bootstrap
from medexport.evaluation.evaluate import Predictor, evaluate, predict_all
from medexport.evaluation.fidelity import fidelity
from medexport.evaluation.guardrails import GuardRailResult, GuardRails
from medexport.evaluation.metrics import Estimate, MetricReport, classification_report, segmentation_report

__all__ = [
    "Estimate", "MetricReport", "classification_report", "segmentation_report", "bootstrap",
    "Predictor", "predict_all", "evaluate", "fidelity", "GuardRails", "GuardRailResult",
]
