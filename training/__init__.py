"""gears_h training toolkit: datasets, analysis, training, export, evaluation, CLI."""
