"""Early-exit decoder-only language models (METHODS §5): the Llama-style backbone, the
llama2.c checkpoint and tokenizer readers, a character-level GPT, class-aware exit-head
initialisation, exit-head training, and the per-token early-exit decoding bundle."""
