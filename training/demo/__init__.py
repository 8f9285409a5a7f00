"""`eomt demo`: a small EoMT trained from scratch on a generated panoptic data set, on the CPU, in minutes.

`run_demo` trains with mask annealing and evaluates PQ with mask-free inference (the default) and with masked attention
kept; `run_ablation` trains the three variants of the paper's central experiment on the same data and budget.
"""

from .recipe import ABLATION, DemoRecipe, Variant
from .run import run_ablation, run_demo

__all__ = ["ABLATION", "DemoRecipe", "Variant", "run_ablation", "run_demo"]
