"""Recovery fine-tuning after compression: distillation from the original on real, unlabelled images, or
training on the user's labelled images."""
from medexport.finetune.distill import DistillConfig, DistillRecord, distill
from medexport.finetune.labelled import LabelledConfig, LabelledRecord, finetune_on_labels

__all__ = ["DistillConfig", "DistillRecord", "LabelledConfig", "LabelledRecord", "distill", "finetune_on_labels"]
