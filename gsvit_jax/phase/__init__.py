"""Cholec80 phase recognition."""
