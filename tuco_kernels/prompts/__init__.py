"""Prompts in, rows out: everything between a user's text and the engine's token batches, and back to files.

records.py    prompts from Python objects (lists, iterables, pandas) or files (.jsonl, .csv, .txt), checked, with where
              each came from and the labels (extra columns) carried to every output
sources.py    prompts from Parquet files and Hugging Face datasets (hf:NAME[:SPLIT[:COLUMN]], save_to_disk folders)
tokenize.py   chat templates and raw text to token ids; the pad id
templates.py  the paper's prompt templates (App. E.2) for a user's own pair
batching.py   token-budget micro-batches, length-sorted and right-padded (generation: left-padded)
output.py     results to .jsonl / .csv / .parquet (+ .meta.json), written whole through tuco_kernels.files
"""
