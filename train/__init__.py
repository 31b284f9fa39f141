"""chargen.train: corpus, vocabulary, the torch model, the training loop, checkpoints."""
