"""Data schema, loaders and validation (to come: PKU-SafeRLHF, HH-RLHF, XSTest)."""
