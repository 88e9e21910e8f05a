"""What a run gives: results tables and summary, energy/cost/FLOP accounting, plots."""
