"""Evaluation: Chamfer, F-score, volume IoU and PSNR/SSIM against ground truth (GSO protocol)."""

from recon.eval.metrics import EvalConfig, evaluate_meshes

__all__ = ["EvalConfig", "evaluate_meshes"]
