"""Stage 2, the analysis of the raw file: one streaming pass of statistics, the sketches it keeps, the report."""
