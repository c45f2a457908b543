"""The cache on disk: one Zarr store per video, its snippets, and the training windows read from it."""
