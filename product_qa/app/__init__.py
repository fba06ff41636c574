"""The web demo (Gradio) over the answering systems."""
