"""Early exit for clustering (E2CM without labels, METHODS §1 "Unsupervised")."""
