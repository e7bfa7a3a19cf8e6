"""Evaluation on HPatches-layout sequences: metrics, classical baselines, prediction cache, report, plots."""
