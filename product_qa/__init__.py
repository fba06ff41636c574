"""Fine-tune a language model to answer questions about product titles with the product's description."""
