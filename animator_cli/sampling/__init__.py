"""Sampling: SVD's Karras/Euler schedule, temporal windows, conditioning and the animation pipeline."""
