"""Sampling: PPS selection of counties, schools and students; weights; replicate weights."""
