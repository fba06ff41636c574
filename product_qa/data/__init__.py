"""Stage 1, the data: reading trn.json, cleaning, filtering, the question phrasings, preparation into
examples and splits, the catalog a run learns and its views, and the synthetic sample generator."""
