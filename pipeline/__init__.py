"""Story pipeline: step logic as plain functions, providers, storage, the canvas."""
