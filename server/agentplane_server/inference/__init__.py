"""InferenceService: embeddings and streamed generation executed by Triton Inference Server."""
