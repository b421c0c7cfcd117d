"""Policy backends: the tabular testbed backend (the causal-LM backend comes next)."""
