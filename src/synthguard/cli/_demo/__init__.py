"""The offline demo: a self-consuming retraining loop on real digits, unguarded vs guarded."""
