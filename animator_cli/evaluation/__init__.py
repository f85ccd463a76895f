"""Evaluation metrics for generated animations: L1, PSNR, SSIM, LPIPS, FVD, CSIM."""

from animator_cli.evaluation.evaluate import METRICS, EvaluationResult, evaluate, find_cases, json_safe, parse_metrics
from animator_cli.evaluation.fvd import frechet_distance, gaussian_stats

__all__ = ["METRICS", "EvaluationResult", "evaluate", "find_cases", "frechet_distance", "gaussian_stats",
           "json_safe", "parse_metrics"]
