"""Model catalogue, weights files, verified downloads and the weights cache."""
