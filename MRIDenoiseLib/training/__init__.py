"""Training backend: validated configs, on-the-fly noisy/clean pairs, trainers and export."""
