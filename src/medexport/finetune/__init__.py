"""Recovery fine-tuning after compression: distillation from the original on real, unlabelled images."""
from medexport.finetune.distill import DistillConfig, DistillRecord, distill

__all__ = ["DistillConfig", "DistillRecord", "distill"]
