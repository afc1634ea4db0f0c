"""Replay of the whole continuous-optimization process over history (README, "Replay")."""
