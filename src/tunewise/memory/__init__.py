"""Memory: measured peak (measure.py) next to a closed-form estimate."""
