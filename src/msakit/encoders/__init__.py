"""Encoders: text (Hugging Face BERT-family) and padding-aware audio/vision Transformers."""
