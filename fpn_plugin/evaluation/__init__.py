"""Evaluation chosen from the dataset, and results next to the published numbers."""
